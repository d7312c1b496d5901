"""Runs the app under gunicorn: the production server behind `python -m eds_server`.

With a gRPC port, the master also starts the gRPC process (serving/grpc_process.py)
before its workers, watches it from its main loop, and stops it with them.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from ..api.auth import writes_open_warning
from ..api.common import CLOSE_CONNECTION
from ..api.state import app_state
from ..app import create_app, registry_for
from ..settings import Settings, store_options
from ..store import Store, open_store
from ..telemetry.metrics import FLUSH_INTERVAL as METRICS_FLUSH_INTERVAL
from ..telemetry.metrics import enable_multiprocess, worker_gone
from ..xds import version_of
from ..xds.clients import FLUSH_WAITS_FOR_ANSWERS_AT_MOST
from . import limits, logs
from .background import Periodic, ttl_sweeper
from .grpc_process import GrpcPart, parts_down
from .gunicorn_options import gunicorn_options
from .preflight import check_can_start

log = logging.getLogger("eds_server")


def closing_when_asked(app):
    """WSGI middleware: the connection closes after an answer whose app set environ[CLOSE_CONNECTION].

    An answer that left part of a request body unread (413, 408) must close its
    connection, or the rest would be read as the next request. gunicorn drops a
    WSGI app's Connection header (hop-by-hop), so the app asks through the
    environ and this tells gunicorn's response, whose start_response it is.
    """

    def wsgi(environ, start_response):
        def start(status, headers, exc_info=None):
            if environ.get(CLOSE_CONNECTION):
                force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
                if force_close is not None:
                    force_close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wsgi


class EdsArbiter(Arbiter):
    """gunicorn's master, also minding the server's other parts (the gRPC process)."""

    def __init__(self, app: Server):
        self.parts = app.parts
        super().__init__(app)

    def reap_workers(self) -> None:
        # gunicorn's reaper collects any child and drops those that are not its
        # workers: the parts are looked at first, so their exit is seen with its status.
        for part in self.parts:
            part.check()
        super().reap_workers()

    def manage_workers(self) -> None:
        for part in self.parts:
            part.check()
        super().manage_workers()

    def stop(self, graceful: bool = True) -> None:
        for part in self.parts:  # in parallel with the workers' own graceful stop
            part.begin_stop()
        super().stop(graceful)
        for part in self.parts:
            part.stop()


class Server(BaseApplication):
    def __init__(
        self, settings: Settings, store: Store, metrics_dir: str, worker_connections: int, parts: list[GrpcPart] = ()
    ):
        self.settings = settings
        self.store = store
        self.metrics_dir = metrics_dir
        self.parts = list(parts)
        self.options: dict[str, Any] = gunicorn_options(settings, worker_connections)
        super().__init__()

    def run(self) -> None:
        try:
            EdsArbiter(self).run()
        except RuntimeError as error:  # what gunicorn's own run() does with it
            log.error("%s", error)
            raise SystemExit(1) from None

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set("post_worker_init", self._post_worker_init)
        self.cfg.set("worker_exit", self._worker_exit)
        self.cfg.set("child_exit", self._child_exit)

    def load(self):
        # Called in each worker after the fork. The store object comes from the
        # master with no connection open (see `serve`): each worker opens its own.
        self.app = create_app(self.settings, store=self.store)
        self.app.wsgi_app = closing_when_asked(self.app.wsgi_app)
        app_state(self.app).parts_down = lambda: parts_down(self.metrics_dir)
        return self.app

    def _post_worker_init(self, worker) -> None:
        state = app_state(worker.wsgi)
        worker.background = [
            ttl_sweeper(state.registry, self.settings.sweep_interval).start(),
            # Early after news (a node reporting another version, or rejecting one): what waits wait for.
            Periodic(
                "eds-clients-flush",
                self.settings.clients_flush_interval,
                state.core.clients.flush,
                wake=state.core.clients.news,
                waits_while=state.core.holds.releasing,
                waits_at_most=FLUSH_WAITS_FOR_ANSWERS_AT_MOST,
            ).start(),
            Periodic("eds-metrics-flush", METRICS_FLUSH_INTERVAL, state.metrics.flush).start(),
        ]

    @staticmethod
    def _worker_exit(server, worker) -> None:
        for task in getattr(worker, "background", ()):
            task.stop()
        state = getattr(worker, "wsgi", None) and app_state(worker.wsgi)
        if state:
            state.metrics.flush()
            try:
                state.core.clients.flush()
            except Exception as error:  # the clients view loses at most this worker's last second
                log.warning("clients view: last flush failed: %s", error)

    @staticmethod
    def _child_exit(server, worker) -> None:
        worker_gone(worker.pid)


def start_up(settings: Settings, store: Store) -> None:
    """What runs once per server, before it answers anything.

    Hosts whose ttl ran out while the server was down are removed before the
    first poll could hand them to Envoy, and the seed is loaded once, not once
    per worker.
    """
    registry = registry_for(settings, store)
    registry.expire()
    registry.seed(settings.services)


def serve(settings: Settings) -> None:
    check_can_start(settings)
    # The start-up's lines look like the workers' (whose Flask app finds a
    # handler already there and adds none of its own).
    logs.configure(settings.log_level, settings.log_format)
    connections, too_few = limits.worker_connections(limits.raise_open_files_limit())
    if too_few:
        log.warning("%s", too_few)
    store = open_store(settings.store, version_of, **store_options(settings))
    try:
        start_up(settings, store)
    finally:
        # Connections must not cross the fork; the workers inherit the store
        # object (a memory:// store with its contents) and reconnect on first use.
        store.close()
    # Only a server that does start warns (a refused start says why, in one line).
    warning = writes_open_warning(settings)
    if warning:
        for line in ("!" * 78, warning, "!" * 78):  # a log line holds no newline (logs.py)
            log.warning("%s", line)
    # Every worker writes its metric values under this server's own directory,
    # made before the workers fork so that /metrics on any of them adds up all.
    # The gRPC process writes its metrics there too, and notes there when it dies.
    metrics_dir = tempfile.mkdtemp(prefix="eds-server-metrics-")
    enable_multiprocess(metrics_dir)
    master = os.getpid()
    parts = []
    try:
        if settings.grpc_port is not None:
            parts.append(GrpcPart(settings, metrics_dir).start())
        Server(settings, store, metrics_dir, connections, parts).run()
    finally:
        # gunicorn's workers leave through here too (SystemExit after their fork): only the master stops the parts.
        if os.getpid() == master:
            for part in parts:
                part.stop()
            shutil.rmtree(metrics_dir, ignore_errors=True)
