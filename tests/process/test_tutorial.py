"""The classic tutorial's curl commands, taken from its text and run with real curl against a real server."""

import json
import re
import subprocess

import pytest

from tests.helpers.captured import tutorial_text

CURL = re.compile(
    r'curl -X (?:GET|POST|PUT) .*?http://localhost:8080/edsservice/myservice"?(?: -H "[^"]*")?', re.DOTALL
)


def tutorial_commands():
    commands = CURL.findall(tutorial_text())
    assert len(commands) == 5, commands  # POST, GET, PUT [], PUT two hosts, GET
    return commands


def run(command, port, host="localhost"):
    command = command.replace("localhost:8080", f"{host}:{port}")
    result = subprocess.run(
        ["bash", "-c", command + " -s -w '\\n%{http_code}'"], capture_output=True, text=True, timeout=30
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body) if body.strip() else None


@pytest.fixture
def server(eds_server):
    # '::' as the tutorial's WSL2 users need: curl's "localhost" may be ::1 or 127.0.0.1.
    return eds_server(host="::", workers=2)


def test_the_tutorial_as_written(server):
    post, get, put_empty, put_two, get_again = tutorial_commands()

    # The tutorial's first POST carries // comments, which JSON does not allow
    # (README.md#the-classic-tutorial-against-eds-server): the operator is told where, instead of a 500.
    status, error = run(post, server.port)
    assert status == 400
    assert "line 2 column 15" in error["message"] and "//" in error["message"]

    status, body = run(re.sub(r" //[^\n]*", "", post), server.port)
    assert status == 201
    assert body["hosts"] == [
        {
            "ip_address": "172.27.211.139",
            "port": 8001,
            "health_status": "HEALTHY",
            "priority": 0,
            "tags": {"az": "us-central1-a", "canary": False, "load_balancing_weight": 50},
        }
    ]

    status, body = run(get, server.port)
    assert status == 200 and body["hosts"][0]["tags"]["load_balancing_weight"] == 50

    status, body = run(put_empty, server.port)
    assert status == 200 and body["hosts"] == []

    status, body = run(put_two, server.port)
    assert status == 200
    assert [(h["ip_address"], h["port"]) for h in body["hosts"]] == [("172.27.211.139", 8001), ("::1", 8002)]

    status, body = run(get_again, server.port)
    assert status == 200 and len(body["hosts"]) == 2

    # The same server answers on IPv6 loopback, where WSL2 users reach it.
    status, body = run(get_again + " -g", server.port, host="[::1]")
    assert status == 200 and len(body["hosts"]) == 2
