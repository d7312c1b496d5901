"""The gRPC process (`python -m eds_server.serving.grpc_main FD`): serves gRPC xDS until told to stop.

Started by the server's master (serving/grpc_process.py), which writes the
settings to its standard input and reads "ready" (or why not) from FD.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import pickle
import signal
import sys

from ..grpc_xds import server as grpc_server
from ..grpc_xds.streams import Hub, Limits
from ..settings import Settings, store_options
from ..store import SqliteStore, open_store
from ..telemetry import Metrics
from ..xds import DiscoveryCore, version_of
from . import logs
from .grpc_process import STOP_GRACE
from .limits import WORKER_CONNECTIONS, raise_open_files_limit

log = logging.getLogger("eds_server")
PARENT_CHECK_INTERVAL = 1.0
GC_THRESHOLDS = (100_000, 50, 100)
# The gRPC process's one change watcher asks SQLite whether anything committed this often (a few
# microseconds a look): a write reaches Envoy ~5 ms sooner than at the workers' 10 ms (docs/PERFORMANCE.md).
SQLITE_CHANGE_CHECK_INTERVAL = 0.001
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent check below still ends it
        pass


async def _serve(settings: Settings, ready_fd: int) -> None:
    store = open_store(settings.store, version_of, **store_options(settings))
    if isinstance(store, SqliteStore):
        store.change_check_interval = SQLITE_CHANGE_CHECK_INTERVAL
    core = DiscoveryCore(store, cache_size=settings.response_cache_size)
    metrics = Metrics()
    hub = Hub(core, metrics, Limits(max_names=settings.max_services)).start()
    try:
        server = await grpc_server.start(settings, hub)
    except grpc_server.BindFailed as error:
        os.write(ready_fd, f"{error}\n".encode())
        return
    open_files = raise_open_files_limit()
    if open_files < WORKER_CONNECTIONS:  # each Envoy's stream, or its connection shared by its streams, is one
        log.warning(
            "open files: the gRPC process may open %s (RLIMIT_NOFILE at its hard limit): fewer Envoys than %s can "
            "connect; raise the hard limit (`ulimit -Hn`, LimitNOFILE= in systemd, `--ulimit nofile=` in docker)",
            open_files,
            WORKER_CONNECTIONS,
        )
    flushing = asyncio.create_task(hub.flush_every(settings.clients_flush_interval))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop_signal, stop.set)
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    parent = os.getppid()
    while not stop.is_set() and os.getppid() == parent:
        try:
            await asyncio.wait_for(stop.wait(), PARENT_CHECK_INTERVAL)
        except TimeoutError:
            pass
    log.info("gRPC xDS stopping: %d streams end", len(hub.streams))
    hub.stop()
    await server.stop(STOP_GRACE)
    flushing.cancel()
    hub.flush()
    try:
        core.clients.flush()
    except Exception as error:
        log.warning("clients view: last flush failed: %s", error)
    store.close()


def main(argv: list[str]) -> int:
    _die_with_parent()
    # Thousands of streams are millions of long-lived objects: with the default thresholds the
    # collector walks them all every few thousand allocations, which one push to 10,000 streams makes.
    gc.set_threshold(*GC_THRESHOLDS)
    settings: Settings = pickle.loads(sys.stdin.buffer.read())
    logs.configure(settings.log_level, settings.log_format)
    asyncio.run(_serve(settings, int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
