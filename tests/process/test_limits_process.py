"""The open-files limit of the real `python -m eds_server`, started under the limits a default Linux sets."""

import socket
import sys
from pathlib import Path

import requests

from scripts.processes import Managed, free_port, worker_pids

# Starts the server under a soft and a hard RLIMIT_NOFILE, as a login shell would give it.
UNDER_LIMITS = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); "
    "os.execv(sys.executable, [sys.executable, '-m', 'eds_server', *sys.argv[3:]])"
)


class LimitedServer(Managed):
    def __init__(self, tmp: Path, soft: int, hard: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"eds-server-{self.port}.log"
        args = [sys.executable, "-c", UNDER_LIMITS, str(soft), str(hard), "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--workers", "1", "--store", f"sqlite:///{tmp}/registry.db"]
        self.launch(args, self.log_path, lambda: requests.get(f"{self.url}/healthz", timeout=1).ok, "healthz", 20)

    def open_files_limit(self) -> int:
        """The soft limit of the worker, from /proc."""
        [worker] = worker_pids(self.process.pid)
        line = next(x for x in Path(f"/proc/{worker}/limits").read_text().splitlines() if x.startswith("Max open"))
        return int(line.split()[3])


def test_the_soft_limit_is_raised_to_the_hard_one(tmp_path):
    server = LimitedServer(tmp_path, soft=1024, hard=16384)
    try:
        assert server.open_files_limit() == 16384
        assert "open files" not in server.log_path.read_text()
    finally:
        server.stop()


def test_a_hard_limit_too_low_is_named_and_bounds_connections_instead_of_failing_accepts(tmp_path):
    server = LimitedServer(tmp_path, soft=64, hard=200)
    connections = []
    try:
        assert server.open_files_limit() == 200
        log = server.log_path.read_text()
        assert "each worker takes at most 136 connections" in log and "ulimit -Hn" in log
        # More idle connections than its descriptors allow (uncapped, the worker failed every accept
        # with EMFILE and its store could not open the database): the ones over the cap wait in the
        # listen backlog until others close, and the worker keeps working.
        for _ in range(250):
            connections.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        for connection in connections[:120]:
            connection.close()
        assert requests.get(f"{server.url}/healthz", timeout=10).ok
        host = {"ip_address": "10.0.0.1", "port": 80}
        assert requests.post(f"{server.url}/edsservice/web/hosts", json=host, timeout=10).status_code == 201
        assert "Too many open files" not in server.log_path.read_text()
    finally:
        for connection in connections:
            connection.close()
        server.stop()
