"""Runs the app under gunicorn: the production server behind `python -m eds_server`."""

from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any

from gunicorn.app.base import BaseApplication

from ..api.auth import writes_open_warning
from ..api.state import app_state
from ..app import create_app, registry_for
from ..settings import Settings
from ..store import Store, open_store
from ..telemetry.metrics import FLUSH_INTERVAL as METRICS_FLUSH_INTERVAL
from ..telemetry.metrics import enable_multiprocess, worker_gone
from ..xds import version_of
from . import limits, logs
from .background import Periodic, ttl_sweeper
from .gunicorn_options import gunicorn_options

log = logging.getLogger("eds_server")


class Server(BaseApplication):
    def __init__(self, settings: Settings, store: Store, metrics_dir: str, worker_connections: int):
        self.settings = settings
        self.store = store
        self.metrics_dir = metrics_dir
        self.options: dict[str, Any] = gunicorn_options(settings, worker_connections)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set("post_worker_init", self._post_worker_init)
        self.cfg.set("worker_exit", self._worker_exit)
        self.cfg.set("child_exit", self._child_exit)
        self.cfg.set("on_exit", self._on_exit)

    def load(self):
        # Called in each worker after the fork. The store object comes from the
        # master with no connection open (see `serve`): each worker opens its own.
        self.app = create_app(self.settings, store=self.store)
        return self.app

    def _post_worker_init(self, worker) -> None:
        state = app_state(worker.wsgi)
        worker.background = [
            ttl_sweeper(state.registry, self.settings.sweep_interval).start(),
            Periodic("eds-clients-flush", self.settings.clients_flush_interval, state.core.clients.flush).start(),
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

    def _on_exit(self, server) -> None:
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


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
    # The start-up's lines look like the workers' (whose Flask app finds a
    # handler already there and adds none of its own).
    logs.configure(settings.log_level, settings.log_format)
    warning = writes_open_warning(settings)
    if warning:
        log.warning("\n%s\n%s\n%s", "!" * 78, warning, "!" * 78)
    connections, too_few = limits.worker_connections(limits.raise_open_files_limit())
    if too_few:
        log.warning(too_few)
    store = open_store(settings.store, version_of)
    try:
        start_up(settings, store)
    finally:
        # Connections must not cross the fork; the workers inherit the store
        # object (a memory:// store with its contents) and reconnect on first use.
        store.close()
    # Every worker writes its metric values under this server's own directory,
    # made before the workers fork so that /metrics on any of them adds up all.
    metrics_dir = tempfile.mkdtemp(prefix="eds-server-metrics-")
    enable_multiprocess(metrics_dir)
    Server(settings, store, metrics_dir, connections).run()
