"""The gRPC part of the server: one asyncio process beside gunicorn's workers, minded by its master.

Why a process of its own (docs/PERFORMANCE.md has the figures): gunicorn's
gevent workers cannot serve grpcio (grpcio's core runs its own threads and
polling, which gevent's monkey-patching does not reach), and a threaded grpc
server holds a thread per open stream, where an Envoy keeps its stream open
for good. grpc.aio serves every stream on one event loop.

The master side (`GrpcPart`, here) starts `python -m eds_server.serving.grpc_main`,
hands it the settings on its standard input, and waits for one line on a
pipe: "ready", or why it could not start (a port in use). Afterwards the
master notices when it dies (logged, and `/readyz` answers 503 naming it),
and stops it with the rest of the server. The process stops by itself when
the master goes away without stopping it (kill -9): the kernel sends it
SIGTERM (PR_SET_PDEATHSIG), and it also watches its parent (serving/grpc_main.py).
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..settings import Settings
from ..telemetry.metrics import worker_gone

log = logging.getLogger("eds_server")
START_TIMEOUT = 30.0
STOP_GRACE = 5.0  # seconds a stopping gRPC process has to end its streams and flush its bookkeeping


class PartFailed(Exception):
    """A part of the server could not start; the message says why, in one line."""


class GrpcPart:
    name = "grpc"

    def __init__(self, settings: Settings, status_dir: str):
        self.settings = settings
        self.down_file = Path(status_dir) / f"{self.name}.down"
        self.process: subprocess.Popen | None = None
        self.stopping = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> GrpcPart:
        ready_read, ready_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"{__package__}.grpc_main", str(ready_write)],
                stdin=subprocess.PIPE,
                pass_fds=(ready_write,),
            )
            os.close(ready_write)
            self.process.stdin.write(pickle.dumps(self.settings))
            self.process.stdin.close()
            line = _read_line(ready_read, START_TIMEOUT)
        finally:
            os.close(ready_read)
        if line != "ready":
            self.stop()
            raise PartFailed(line or f"the gRPC process did not start within {START_TIMEOUT:.0f}s")
        log.info("gRPC xDS (pid %s) listening on %s", self.pid, self.settings.grpc_address)
        return self

    def check(self) -> None:
        """Called by the master's loop: a gRPC process that ended unasked is logged once and marked down."""
        if self.process is None or self.stopping or self.process.poll() is None:
            return
        code = self.process.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        reason = f"gRPC process (pid {self.process.pid}, {self.settings.grpc_address}) {how}"
        log.error("%s: gRPC xDS is down; /readyz answers 503 until the server restarts", reason)
        self.down_file.write_text(reason)
        worker_gone(self.process.pid)  # its open-stream gauges leave /metrics
        self.process = None

    def begin_stop(self) -> None:
        """SIGTERM: the process ends its streams (STOP_GRACE) while the caller stops the rest."""
        self.stopping = True
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def stop(self, timeout: float = STOP_GRACE + 2) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        self.begin_stop()
        process, self.process = self.process, None
        if process is None:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("gRPC process (pid %s) did not stop within %ss: killed", process.pid, timeout)
            process.kill()
            process.wait()


def parts_down(status_dir: str) -> dict[str, str]:
    """Parts that died, each with why: what `/readyz` reports."""
    return {path.stem: path.read_text() for path in Path(status_dir).glob("*.down")}


def _read_line(fd: int, timeout: float) -> str:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()
