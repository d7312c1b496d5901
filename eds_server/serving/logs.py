"""Log lines, as text or as one JSON object per line (setting log_format).

gunicorn's logger class is the one place that sets up every handler: its own
error and access lines and eds-server's loggers (`eds_server.*`: registry
changes, refusals, polls). Access lines name the Envoy node that polled.

A successful poll (200 or 304, held or not) gets no access line unless
`access_log_polls` asks for one: a fleet's polls are nearly all alike and the
metrics count them, while formatting and writing a line costs a large share of
an up-to-date poll (docs/PERFORMANCE.md). Such a poll costs the logger one
status and one path comparison. Writes, reads of the registry, refusals,
errors and polls that did not succeed keep their lines.
"""

from __future__ import annotations

import logging

from gunicorn import glogging
from pythonjsonlogger.json import JsonFormatter

from ..xds.resources import POLL_PATHS, REGISTRATION_V1_PATH

TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
# `eds.node` is put in the WSGI environ by the poll route (api/polls.py).
ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms node=%({eds.node}e)s'
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
V1_REGISTRATION_PREFIX = REGISTRATION_V1_PATH + "/"


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}
    )


def configure(level: str | int, log_format: str) -> None:
    """eds-server's own loggers (`eds_server.*`): one handler on stderr, in the chosen format.

    Called before gunicorn starts (the start-up's lines) and again by gunicorn's logger class.
    """
    ours = logging.getLogger("eds_server")
    ours.setLevel(level.upper() if isinstance(level, str) else level)
    ours.propagate = False
    for handler in list(ours.handlers):
        ours.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    ours.addHandler(handler)


def successful_poll(resp, environ: dict) -> bool:
    """An Envoy poll answered 200 or 304 (v3, v2, or the v1 registration call)."""
    status = getattr(resp, "status_code", None)
    if status is None or status >= 400:
        return False
    path = environ.get("PATH_INFO", "")
    return path in POLL_PATHS or path.startswith(V1_REGISTRATION_PREFIX)


class EdsLogger(glogging.Logger):
    log_format = "text"
    access_log_polls = False

    def setup(self, cfg) -> None:
        super().setup(cfg)
        if self.log_format == "json":
            for handler in self.error_log.handlers + self.access_log.handlers:
                handler.setFormatter(json_formatter())
        configure(self.loglevel, self.log_format)

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_polls and successful_poll(resp, environ):
            return
        if self.log_format != "json" or not self.access_log_enabled:
            return super().access(resp, req, environ, request_time)
        atoms = self.atoms(resp, req, environ, request_time)
        self.access_log.info(
            "%s %s %s",
            atoms["m"],
            atoms["U"],
            atoms["s"],
            extra={
                "remote": atoms["h"],
                "method": atoms["m"],
                "path": atoms["U"],
                "query": atoms["q"],
                "status": atoms["s"],
                "bytes": atoms["B"],
                "duration_ms": atoms["M"],
                "user_agent": atoms["a"],
                "node": environ.get("eds.node"),
            },
        )


def logger_class(log_format: str, access_log_polls: bool = False) -> type[EdsLogger]:
    """gunicorn instantiates the class itself, so the settings travel as class attributes."""
    return type("EdsLogger", (EdsLogger,), {"log_format": log_format, "access_log_polls": access_log_polls})
