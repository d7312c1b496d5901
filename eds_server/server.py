"""Runs the app under gunicorn: the production server behind `python -m eds_server`."""

from __future__ import annotations

import logging
from typing import Any

from flask.logging import default_handler
from gunicorn.app.base import BaseApplication

from .api.auth import writes_open_warning
from .app import create_app, registry_for
from .gunicorn_conf import gunicorn_options
from .settings import Settings
from .store import Store, open_store
from .sweeper import Sweeper
from .xds import version_of

log = logging.getLogger("eds_server")


class Server(BaseApplication):
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.options: dict[str, Any] = gunicorn_options(settings)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set("post_worker_init", self._post_worker_init)
        self.cfg.set("worker_exit", self._worker_exit)

    def load(self):
        # Called in each worker after the fork. The store object comes from the
        # master with no connection open (see `serve`): each worker opens its own.
        self.app = create_app(self.settings, store=self.store)
        return self.app

    def _post_worker_init(self, worker) -> None:
        registry = worker.wsgi.extensions["eds"].registry
        worker.sweeper = Sweeper(registry, self.settings.sweep_interval).start()

    @staticmethod
    def _worker_exit(server, worker) -> None:
        sweeper = getattr(worker, "sweeper", None)
        if sweeper is not None:
            sweeper.stop()


def configure_logging(settings: Settings) -> None:
    logger = logging.getLogger("eds_server")
    logger.setLevel(settings.log_level.upper())
    # Flask's own handler, so the master's lines look like the workers' (their
    # Flask app finds it inherited and adds no second one).
    if not logger.handlers:
        logger.addHandler(default_handler)


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
    configure_logging(settings)
    warning = writes_open_warning(settings)
    if warning:
        log.warning("\n%s\n%s\n%s", "!" * 78, warning, "!" * 78)
    store = open_store(settings.store, version_of)
    try:
        start_up(settings, store)
    finally:
        # Connections must not cross the fork; the workers inherit the store
        # object (a memory:// store with its contents) and reconnect on first use.
        store.close()
    Server(settings, store).run()
