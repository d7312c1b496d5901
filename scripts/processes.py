"""Real processes for the tests and `make demo`: started on loopback ports, always stopped by PID.

Every process starts in a session of its own (its PID is the session and group id), so that
stopping it by PID also stops its children (gunicorn's workers), a terminal's Ctrl-C reaches
only the demo, which then stops everything in order, and `survivors()` can tell whether
anything started here is still running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from .pki import Pki

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

_running: list[subprocess.Popen] = []
# Every session ever started here (never shrinks), for `survivors()`.
_sessions: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; bounded by `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as error:  # the thing waited for may not answer yet
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s (last error: {last_error})")


def worker_pids(master: int) -> list[int]:
    """A gunicorn master's workers: its children, from /proc."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def rss_kb(pid: int) -> int:
    """A process's resident memory, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def start(args: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.Popen:
    """Start a process in its own session so that it and its children stop together."""
    log = open(log_path, "ab")
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True
    )
    log.close()
    _running.append(process)
    _sessions.add(process.pid)
    return process


def stop(process: subprocess.Popen, timeout: float = 10, first_signal: int = signal.SIGTERM) -> None:
    """`first_signal` (SIGTERM) to the process group by the leader's PID, SIGKILL when it does not go in time."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, first_signal)
            os.killpg(process.pid, signal.SIGCONT)  # a paused process would not act on it until resumed
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
    # A child that outlived its leader (a worker slow to exit) is still in the group.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process in _running:
        _running.remove(process)


def stop_all() -> None:
    """Stop every running process, the last started first (Envoy before the server it polls)."""
    for process in reversed(list(_running)):
        stop(process)


def survivors(sessions: Iterable[int] | None = None) -> list[int]:
    """PIDs of live processes in `sessions` (default: every session started here)."""
    sessions = _sessions if sessions is None else set(sessions)
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After "(comm)": state, ppid, pgrp, session. comm may contain spaces, hence rpartition.
            state, _ppid, _pgrp, session = stat.read_text().rpartition(")")[2].split()[:4]
        except OSError:  # the process exited while being read
            continue
        if int(session) in sessions and state != "Z":
            alive.append(int(stat.parent.name))
    return sorted(alive)


class Managed:
    """A process owned by these tools: started in a session of its own, ready when a probe says so, stopped by PID."""

    process: subprocess.Popen | None = None

    def launch(
        self,
        args: list[str],
        log_path: Path,
        ready: Callable[[], object],
        what: str,
        timeout: float,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start `args` and wait until `ready()`; when it never is, stop it and raise with the end of its log."""
        self.process = start(args, log_path, env=env)
        try:
            wait_until(ready, timeout=timeout, what=what)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{what} not reached; log {log_path}:\n{log_path.read_text()[-4000:]}") from None

    def stop(self, first_signal: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop(self.process, first_signal=first_signal)
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: the process hangs (connections open, nothing read or answered) until `resume`."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


@dataclass
class EdsServer(Managed):
    """A real `python -m eds_server` (gunicorn) process."""

    tmp: Path
    store: str
    workers: int = 2
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    # Serve HTTPS with these certificates and require client certificates (mutual TLS).
    tls: Pki | None = None
    port: int = 0
    # Also serve gRPC xDS (--grpc-port), on `grpc_port` (0: a free one).
    grpc: bool = False
    grpc_port: int = 0
    process: subprocess.Popen | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def client_options(self) -> dict[str, Any]:
        """What `requests` needs to talk to this server: the CA to trust and a client certificate."""
        if self.tls is None:
            return {}
        return {"verify": str(self.tls.ca), "cert": self.tls.client.requests_cert}

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--certfile", str(self.tls.server.cert),
            "--keyfile", str(self.tls.server.key),
            "--ca-certs", str(self.tls.ca),
            "--require-client-cert",
        ]  # fmt: skip

    @property
    def log_path(self) -> Path:
        return self.tmp / f"eds-server-{self.port}.log"

    @property
    def grpc_target(self) -> str:
        """The gRPC port as a grpcio channel names it."""
        return f"127.0.0.1:{self.grpc_port}" if self.host in ("::", "0.0.0.0") else f"{self.host}:{self.grpc_port}"

    def start(self) -> EdsServer:
        loopback = self.host if self.host not in ("::", "0.0.0.0") else "127.0.0.1"
        self.port = self.port or free_port(loopback)
        if self.grpc:
            self.grpc_port = self.grpc_port or free_port(loopback)
        args = [
            sys.executable,
            "-m",
            "eds_server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--store",
            self.store,
            *self._tls_args(),
            *(["--grpc-port", str(self.grpc_port)] if self.grpc else []),
            *self.extra_args,
        ]
        probe = self.url if self.host not in ("::", "0.0.0.0") else f"{self.scheme}://127.0.0.1:{self.port}"
        self.launch(
            args,
            self.log_path,
            lambda: requests.get(f"{probe}/healthz", timeout=1, **self.client_options).ok,
            what="eds-server healthz",
            timeout=20,
            env=self.env,
        )
        return self

    def restart(self) -> EdsServer:
        self.stop()
        return self.start()
