"""Serving: the process model (gunicorn master, gevent workers), start-up, shutdown, background tasks, log formats."""

from .preflight import CannotStart
from .runner import serve

__all__ = ["CannotStart", "serve"]
