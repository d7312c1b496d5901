"""`make demo` (scripts/demo.py) as a user runs it: follow the steps it prints, then Ctrl-C."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from scripts.processes import REPO, free_port, start, stop, survivors, wait_until

GUIDE_END = "Press Ctrl-C to stop everything."


def shell(command: str) -> str:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=15, check=True).stdout


def steps(guide: str) -> list[list[str]]:
    """The commands of each numbered step, as printed."""
    found: list[list[str]] = []
    for line in guide.splitlines():
        if re.match(r"\d+\. ", line):
            found.append([])
        elif line.startswith("  $ ") and found:
            found[-1].append(line[4:])
    return found


@dataclass
class Demo:
    process: subprocess.Popen
    log: Path
    admin_port: int

    @property
    def guide(self) -> str:
        return self.log.read_text()

    @property
    def children(self) -> list[int]:
        """The PIDs the guide prints; each leads a session of its own (gunicorn's workers are in eds-server's)."""
        return [int(pid) for pid in re.findall(r"\(pid (\d+)", self.guide)]


@pytest.fixture
def demo(tmp_path):
    ports = [free_port() for _ in range(5)]
    args = ["--eds-port", ports[0], "--listener-port", ports[1], "--admin-port", ports[2], "--upstream-ports"]
    log = tmp_path / "demo.out"
    demo = Demo(
        start([sys.executable, "-m", "scripts.demo", *map(str, args + ports[3:])], log, cwd=REPO), log, ports[2]
    )
    try:
        wait_until(
            lambda: GUIDE_END in demo.guide or demo.process.poll() is not None, timeout=40, what="the demo's guide"
        )
        assert GUIDE_END in demo.guide, demo.guide
        yield demo
    finally:
        # Only does anything when the test failed before its Ctrl-C: SIGTERM stops the demo as Ctrl-C does,
        # and whatever it left (were it killed) is killed here.
        stop(demo.process)
        for session in demo.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(session, signal.SIGKILL)


def test_the_demo_runs_the_tutorial_and_stops_everything_on_ctrl_c(demo):
    children = demo.children
    assert len(children) == 4, demo.guide  # eds-server, two upstreams, Envoy
    no_endpoints, register, flows, emptied, balanced = steps(demo.guide)

    (curl_listener,) = no_endpoints
    output = shell(curl_listener)
    assert output.startswith("HTTP/1.1 503") and output.endswith("no healthy upstream"), output

    post, get = register
    registered = json.loads(shell(post))["hosts"]
    assert len(registered) == 1 and json.loads(shell(get))["hosts"] == registered

    (curl_listener,) = flows
    wait_until(lambda: shell(curl_listener).endswith("hello-world1\n"), timeout=10, what="traffic to hello-world1")

    put_empty, curl_listener = emptied
    shell(put_empty)
    wait_until(lambda: shell(curl_listener).endswith("no healthy upstream"), timeout=10, what="no healthy upstream")

    put_both, loop = balanced
    shell(put_both)
    wait_until(lambda: set(shell(loop).split()) == {"hello-world1", "hello-world2"}, timeout=10, what="traffic to both")

    rejected = requests.get(f"http://127.0.0.1:{demo.admin_port}/stats?filter=targetCluster.update_rejected$").text
    assert rejected.strip() == "cluster.targetCluster.update_rejected: 0"

    demo.process.send_signal(signal.SIGINT)  # what Ctrl-C sends: the children run in sessions of their own
    assert demo.process.wait(timeout=30) == 0, demo.guide
    assert demo.guide.rstrip().endswith("stopped.")
    assert survivors(children) == []


def test_the_demo_names_a_port_in_use_and_starts_nothing():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "scripts.demo", "--eds-port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use (choose another with --eds-port)" in result.stderr
    assert result.stdout == ""
