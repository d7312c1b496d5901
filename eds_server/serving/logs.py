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

Much of what is logged was chosen by a client: a node id, a path, a user
agent, X-Forwarded-For, a refused value. `SafeValues`, on every handler,
makes each record safe before any format sees it, so no call site can
forget. A line is at most MAX_LINE_CHARS, and holds no control character
(newline, carriage return, ESC, the rest of C0 and C1), Unicode line
separator, bidi control (U+202E shows text reversed), zero-width character
or lone surrogate: they are written as escapes (`\\n`, `\\x1b`, `\\u202e`).
When a line has anything to escape, or is longer than MAX_VALUE_CHARS, each
value is made safe on its own (cut to MAX_VALUE_CHARS, escaped, its double
quotes too), so the line keeps its shape; extra fields (the JSON access
line's) always are. A value cannot end its line, fake another one, move a
terminal's cursor or close a quoted field. (Backslashes stay as they are, so
a value already quoted by repr() reads as it did; gunicorn escapes the
quotes of its access line's values itself.) Tracebacks (exc_info) are the
server's own and are kept as they are.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from gunicorn import glogging
from pythonjsonlogger.json import JsonFormatter

from ..xds.resources import POLL_PATHS, REGISTRATION_V1_PATH

TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
# `eds.node` is put in the WSGI environ by the poll route (api/polls.py).
ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms node=%({eds.node}e)s'
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
V1_REGISTRATION_PREFIX = REGISTRATION_V1_PATH + "/"

MAX_VALUE_CHARS = 1024
MAX_LINE_CHARS = 16 * 1024
# What a line must not carry raw, and what a value must not either (its double quotes too).
_UNSAFE = "\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff"
UNSAFE_IN_LINE = re.compile(f"[{_UNSAFE}]")
UNSAFE_IN_VALUE = re.compile(f'[{_UNSAFE}"]')
READABLE = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Attributes every LogRecord has: the others are a call's `extra` fields (the JSON access line's).
_BASE_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({})))
RECORD_ATTRIBUTES = _BASE_ATTRIBUTES | {"message", "asctime"}  # the last two set by formatters


def _escape(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    return READABLE.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"...[{len(text)} chars]"
    return text[: limit - len(marker)] + marker


def safe_value(value: Any) -> Any:
    """A value a client may have chosen, as it may appear in a log line (numbers stay numbers).

    At most MAX_VALUE_CHARS, and making a safe value safe again leaves it as it is.
    """
    if isinstance(value, (int, float)) or value is None:
        return value
    text = _cut(value if isinstance(value, str) else str(value), MAX_VALUE_CHARS)  # before escaping: cheap
    return _cut(UNSAFE_IN_VALUE.sub(_escape, text), MAX_VALUE_CHARS) if UNSAFE_IN_VALUE.search(text) else text


class _SafeMapping(Mapping):
    """The arguments of a %(name)s format (gunicorn's access atoms), each made safe when the format reads it."""

    def __init__(self, values: Mapping):
        self.values = values

    def __getitem__(self, key):
        return safe_value(self.values[key])

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


class SafeValues(logging.Filter):
    """Makes every record safe to write (see the module's docstring); never refuses one.

    A record goes through every handler of its logger: a second pass leaves it as the first made it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = _plain_message(record)
        if message is None or len(message) > MAX_VALUE_CHARS or UNSAFE_IN_LINE.search(message):
            # Something to cut or escape: each value on its own (the access line's quotes stay quotes).
            message = _safe_message(record)
        record.msg, record.args = message, None
        if len(vars(record)) > len(_BASE_ATTRIBUTES):  # it may have `extra` fields
            for name in vars(record).keys() - RECORD_ATTRIBUTES:
                value = getattr(record, name)
                if isinstance(value, str):
                    setattr(record, name, safe_value(value))
        return True


def _plain_message(record: logging.LogRecord) -> str | None:
    """The message as logging would write it, or None when its format breaks. Most lines (every poll's
    access line) hold nothing to cut or escape: this is all they cost."""
    try:
        return record.getMessage()
    except Exception:
        return None


def _safe_message(record: logging.LogRecord) -> str:
    try:
        args = record.args
        if isinstance(args, Mapping):
            message = str(record.msg) % _SafeMapping(args)
        elif args:
            message = str(record.msg) % tuple(safe_value(arg) for arg in args)
        else:
            message = str(record.msg)
    except Exception:  # a broken format: logged as logging would, with its arguments made safe
        message = f"{record.msg!s} {safe_value(record.args)}"
    message = _cut(message, MAX_LINE_CHARS)
    if UNSAFE_IN_LINE.search(message):
        message = _cut(UNSAFE_IN_LINE.sub(_escape, message), MAX_LINE_CHARS)
    return message


def safe_handlers(*loggers: logging.Logger) -> None:
    """Every handler of `loggers` writes safe lines (idempotent: setup runs again on a reload)."""
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, SafeValues) for f in handler.filters):
                handler.addFilter(SafeValues())


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
    safe_handlers(ours)


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
        safe_handlers(self.error_log, self.access_log)
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
