"""Runs the app under gunicorn: the production server behind `python -m eds_server`."""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.app.base import BaseApplication

from .api.auth import writes_open_warning
from .app import create_app
from .gunicorn_conf import gunicorn_options
from .settings import Settings
from .sweeper import Sweeper

log = logging.getLogger("eds_server")


class Server(BaseApplication):
    def __init__(self, settings: Settings):
        self.settings = settings
        self.options: dict[str, Any] = gunicorn_options(settings)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set("post_worker_init", self._post_worker_init)
        self.cfg.set("worker_exit", self._worker_exit)

    def load(self):
        # Called in each worker after the fork: every worker opens its own
        # store connections, and nothing is opened in the master.
        logging.getLogger("eds_server").setLevel(self.settings.log_level.upper())
        self.app = create_app(self.settings)
        return self.app

    def _post_worker_init(self, worker) -> None:
        registry = worker.wsgi.extensions["eds"].registry
        worker.sweeper = Sweeper(registry, self.settings.sweep_interval).start()

    @staticmethod
    def _worker_exit(server, worker) -> None:
        sweeper = getattr(worker, "sweeper", None)
        if sweeper is not None:
            sweeper.stop()


def serve(settings: Settings) -> None:
    warning = writes_open_warning(settings)
    if warning:
        log.warning("\n%s\n%s\n%s", "!" * 78, warning, "!" * 78)
    Server(settings).run()
