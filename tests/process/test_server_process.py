"""The real `python -m eds_server` (gunicorn, several workers, one sqlite file)."""

import http.client
import json
import re
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import requests

from scripts.processes import REPO

V3_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def poll(server, version=None):
    body = {"node": {"id": "n"}, "resource_names": ["web"], "type_url": V3_TYPE}
    if version:
        body["version_info"] = version
    # A fresh connection each time, so that successive polls land on any worker.
    return requests.post(f"{server.url}/v3/discovery:endpoints", json=body, timeout=5, headers={"Connection": "close"})


def endpoints(answer) -> list[int]:
    """The ports in a v3 answer: a `requests` response, or the bytes of one."""
    [assignment] = (json.loads(answer) if isinstance(answer, bytes) else answer.json())["resources"]
    return sorted(
        lb["endpoint"]["address"]["socket_address"]["port_value"]
        for group in assignment["endpoints"]
        for lb in group["lb_endpoints"]
    )


def add_host(server, port, **fields):
    """POST one host of service `web` on a fresh connection (so successive writes land on any worker)."""
    return requests.post(
        f"{server.url}/edsservice/web/hosts",
        json={"ip_address": "127.0.0.1", "port": port, **fields},
        timeout=5,
        headers={"Connection": "close"},
    )


def assert_the_next_poll_serves_every_write(writers, pollers, ports):
    """Add one host per port on `writers` in turn; right after each, a poll on the next of `pollers`
    must get it (200, the write's version), and then every poller must answer that version with 304."""
    held = None
    for index, port in enumerate(ports):
        write = add_host(writers[index % len(writers)], port)
        assert write.status_code == 201
        poller = pollers[index % len(pollers)]
        answer = poll(poller, held)
        assert answer.status_code == 200, f"{poller.url} served a stale answer after port {port} was written"
        assert answer.json()["version_info"] == write.json()["version"]
        assert endpoints(answer) == list(ports[: index + 1])
        held = answer.json()["version_info"]
        assert [poll(other, held).status_code for other in pollers] == [304] * len(pollers)


def test_a_write_is_seen_by_the_very_next_poll_on_any_worker(eds_server):
    server = eds_server(workers=3)
    assert_the_next_poll_serves_every_write([server], [server], range(9001, 9031))


def test_a_body_re_sent_on_one_connection_is_answered_afresh_and_checked(eds_server, envoy_poll):
    """Envoy re-sends its 77 KB body on one keep-alive connection, and the server does not parse it
    again (ParsedPerConnection): the answers must still follow every write, and any changed byte
    must be read in full, so a malformed body is still refused."""
    server = eds_server(workers=2)
    assert add_host(server, 9001).status_code == 201
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=5)

    def send(body: dict | bytes) -> tuple[int, bytes]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        connection.request("POST", "/v3/discovery:endpoints", raw, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()

    try:
        first = {**envoy_poll["body"], "resource_names": ["web"]}
        del first["version_info"]
        status, answer = send(first)
        version = json.loads(answer)["version_info"]
        current = json.dumps({**first, "version_info": version}).encode()
        assert status == 200
        assert [send(current)[0] for _ in range(3)] == [304] * 3
        assert send(current[:-1])[0] == 400
        assert send(current.replace(b'"web"', b'"w b"'))[0] == 400
        assert send(current)[0] == 304
        assert add_host(server, 9002).status_code == 201
        status, answer = send(current)
        assert status == 200 and endpoints(answer) == [9001, 9002]
        assert json.loads(answer)["version_info"] != version
    finally:
        connection.close()


def test_a_restart_keeps_every_host_and_every_version(eds_server):
    server = eds_server(workers=2)
    for name in ("web", "api", "db"):
        hosts = [{"ip_address": f"10.0.0.{i}", "port": 80 + i, "ttl": 3600} for i in range(1, 6)]
        assert requests.put(f"{server.url}/edsservice/{name}", json={"hosts": hosts}, timeout=5).ok
    before = requests.get(f"{server.url}/edsservice", timeout=5).json()
    server.restart()
    after = requests.get(f"{server.url}/edsservice", timeout=5).json()
    # The TTL deadlines survive too: the time left went on counting down, it did not start again.
    left_before = [h.pop("expires_in") for s in before for h in s["hosts"]]
    left_after = [h.pop("expires_in") for s in after for h in s["hosts"]]
    assert all(a <= b and a < 3600 for a, b in zip(left_after, left_before, strict=True))
    assert after == before
    assert sum(len(s["hosts"]) for s in after) == 15


def test_memory_store_refuses_several_workers():
    result = subprocess.run(
        [sys.executable, "-m", "eds_server", "--store", "memory://", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "memory://" in result.stderr and "--workers 1" in result.stderr


def test_bad_settings_exit_with_a_message():
    result = subprocess.run(
        [sys.executable, "-m", "eds_server", "--store", "postgres://x"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "unknown scheme" in result.stderr


PYTHON_WARNING = re.compile(r"^\S+:\d+: \w+Warning: .*$", re.MULTILINE)


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_a_started_worker_logs_no_python_warning(eds_server, request, tmp_path, store):
    """An operator reads every warning in the log as something to look into (gevent's about patching
    ssl late, for one, which named only redis-py's asyncio client, unused here)."""
    url = request.getfixturevalue("redis_url") if store == "redis" else f"sqlite:///{tmp_path}/registry.db"
    server = eds_server(store=url, workers=1)
    assert add_host(server, 9001).status_code == 201  # the worker is up: it was patched
    assert PYTHON_WARNING.findall(server.log_path.read_text()) == []
