"""What every namespace of the HTTP layer shares: reading bodies, who called, mapping errors.

Every request body is read here (`read_body`), for the registry API through
Flask and for Envoy's polls alike, so one reader bounds them all: by
`max_body_bytes` whether the client declared a length or sent chunks, and by
what JSON the registry can hold (`read_json`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app, request
from flask_restx import Api, Model, fields
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..model import (
    NAME_PATTERN,
    AlreadyExists,
    Expected,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PreconditionFailed,
    Problem,
    RegistryError,
)
from ..model.values import lone_surrogate_problem
from ..settings import Network
from ..store import CommitOutcomeUnknown, StoreUnavailable
from ..xds.resources import POLL_PATHS
from .state import app_state

log = logging.getLogger("eds_server.http")
refusals = logging.getLogger("eds_server.refusals")

# Shared by every namespace's documentation: the error body, and the refusals any call may get.
error_model = Model(
    "Error",
    {
        "message": fields.String(required=True),
        "errors": fields.List(fields.Raw, description="each problem: field, value, rule"),
    },
)


def nullable(field: fields.Raw) -> fields.Raw:
    """`field`, documented as also accepting null: the model reads null as "not given"."""
    schema = field.schema

    def nullable_schema() -> dict[str, Any]:
        documented = {**schema(), "x-nullable": True}
        if "enum" in documented:
            documented["enum"] = [*documented["enum"], None]
        return documented

    field.schema = nullable_schema
    return field


# The {name} of the routes under /edsservice, as documented.
NAME_PARAM = {"description": "service name: 1-128 characters of A-Z a-z 0-9 . _ -", "pattern": NAME_PATTERN.pattern}

# Calls the token check (api/auth.py) may refuse document these.
AUTH_RESPONSES = {
    401: ("no bearer token, and this call needs one (WWW-Authenticate: Bearer)", error_model),
    403: ("the bearer token is not accepted for this call", error_model),
}
TOO_LARGE = (413, "the request body is over max_body_bytes; nothing was changed", error_model)
BODY_STOPPED = (408, "the body stopped arriving (body_read_timeout); the connection is closed", error_model)
NOT_JSON = (415, "the body is not sent as Content-Type: application/json; nothing was changed", error_model)

STATUS_OF = {
    InvalidInput: 400,
    LimitExceeded: 400,
    NotFound: 404,
    AlreadyExists: 409,
    PreconditionFailed: 412,
}


# The deepest a request body may nest arrays and objects: a service body holds
# hosts holding metadata (itself at most model.values.MAX_DEPTH deep), and
# nothing that walks a body afterwards (merge patches, error messages) meets
# a recursion limit.
MAX_BODY_DEPTH = 64
# A lone surrogate can only come from a \uD800-\uDFFF escape (UTF-8 input cannot hold one).
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
JSON_MEDIA_TYPE = re.compile(r"^application/([a-z0-9.+-]+\+)?json\s*(;.*)?$", re.IGNORECASE)
# Set in the WSGI environ by an answer after which the connection must close; the server
# (serving/worker.py) acts on it, as a WSGI app's own Connection header is ignored.
CLOSE_CONNECTION = "eds.close_connection"


class BodyRefused(Exception):
    """A request body that is not read to its end: too large, too slow, or broken on the wire.

    What is left of it on the connection cannot be told from the next
    request, so the answer closes the connection.
    """

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BodyTooLarge(BodyRefused):
    status = 413


class BodyTimedOut(BodyRefused):
    status = 408


def read_body(environ: dict, limit: int) -> bytes:
    """The request body, refused past `limit` bytes (declared or chunked) without reading more than that."""
    stream = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH")
    if declared:
        # Digits only: int() would also take " 12", "+12", "1_000" or "-1" (read all).
        if not (declared.isascii() and declared.isdigit()):
            raise BodyRefused(f"Content-Length {declared[:40]!r} is not a number of bytes")
        if len(declared) > len(str(limit)) or int(declared) > limit:
            raise BodyTooLarge(too_large_message(limit))
        wanted = int(declared)
    else:
        wanted = limit + 1  # chunked, or no length: one byte past the limit tells an oversized body
    try:
        body = stream.read(wanted)
    except TimeoutError:
        raise BodyTimedOut(
            "the request body stopped arriving (setting body_read_timeout, EDS_BODY_READ_TIMEOUT); nothing was changed"
        ) from None
    except Exception as error:  # the server's reader: a broken chunked encoding, a client gone mid-body
        raise BodyRefused(f"the request body could not be read: {error}") from None
    if len(body) > limit:
        raise BodyTooLarge(too_large_message(limit))
    return body


def _finite(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise InvalidInput([Problem("body", literal, "is a number too large for a double (it would be infinite)")])
    return number


def _refuse_constant(name: str) -> Any:
    raise InvalidInput([Problem("body", name, "is not valid JSON (JSON has no NaN or Infinity)")])


def nests_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether valid JSON `raw` nests arrays and objects more than `limit` deep, at C speed: bytes
    operations only, where a walk of the parsed body in Python costs several times as much
    (docs/PERFORMANCE.md).

    Escaped backslashes and quotes go first, then every byte but brackets and quotes
    (UTF-8 never puts an ASCII byte inside a character), then the strings; each pass
    of replace() then takes away one innermost level.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    skeleton = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    skeleton = _STRINGS.sub(b"", skeleton).translate(_LEVELS)
    for _ in range(limit):
        if not skeleton:
            return False
        skeleton = skeleton.replace(b"()", b"")
    return bool(skeleton)


_NOT_STRUCTURE = bytes(byte for byte in range(256) if byte not in b'[]{}"')
_STRINGS = re.compile(rb'"[^"]*"')
_LEVELS = bytes.maketrans(b"[]{}", b"()()")


def read_json() -> Any:
    """The request body as JSON the registry can hold; anything else is a 400 that names why.

    Not JSON: the parser's line and column. Numbers past a double (`1e400`)
    and lone surrogates (`"\\ud800"`) are JSON that nothing after this could
    store or render, and are refused here too, as is nesting past MAX_BODY_DEPTH.
    """
    raw = read_body(request.environ, current_app.config["MAX_CONTENT_LENGTH"])
    where = f"<{len(raw)} bytes>"
    too_deep = InvalidInput([Problem("body", where, f"nests arrays or objects more than {MAX_BODY_DEPTH} deep")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInput([Problem("body", where, f"is not UTF-8 (byte {error.start})")]) from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except json.JSONDecodeError as error:
        hint = " (comments such as // are not allowed in JSON)" if "//" in text else ""
        raise InvalidInput(
            [
                Problem(
                    "body",
                    where,
                    f"is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}{hint}",
                )
            ]
        ) from None
    except ValueError as error:  # an integer of more digits than Python converts
        raise InvalidInput([Problem("body", where, f"is not valid JSON: {error}")]) from None
    except RecursionError:
        raise too_deep from None
    if nests_deeper_than(raw, MAX_BODY_DEPTH):
        raise too_deep
    if SURROGATE_ESCAPE.search(text) and (problem := lone_surrogate_problem(data, "body")) is not None:
        raise InvalidInput([problem])
    return data


def require_json_bodies(app: Flask) -> None:
    """A write that carries a body must say it is JSON (415 otherwise).

    A web page can make a browser POST text/plain or a form to any address
    without asking first (no CORS preflight); a JSON content type it cannot
    send that way. So on a server without tokens, no page an operator visits
    can write to the registry. Envoy's polls only read: they take any content type.
    """

    @app.before_request
    def json_or_refuse():
        if request.method not in WRITE_METHODS or request.path in POLL_PATHS or not _has_body():
            return None
        content_type = request.headers.get("Content-Type", "")
        if JSON_MEDIA_TYPE.match(content_type.strip()):
            return None
        shown = f"Content-Type {content_type[:100]!r}" if content_type else "no Content-Type"
        log_refusal(request.method, request.path, f"{shown}: not JSON")
        return {
            "message": f"{request.method} {request.path} takes a JSON body: send it with "
            f"'Content-Type: application/json' ({shown} given); nothing was changed"
        }, 415


WRITE_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))


def _has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def _in(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:10.0.0.7: an IPv4 peer, as a socket on :: sees it
    return any(ip in network for network in trusted)


def timestamp(epoch: float) -> str:
    """An epoch time as the API writes times: ISO-8601 UTC, to the millisecond."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def caller() -> str:
    """Who made a request, for the change log and refusals (never a credential).

    The peer's address, unless the peer is one of the trusted proxies
    (setting trusted_proxies): then X-Forwarded-For is read from its right
    end, past every trusted proxy, to the first address that is not one. A
    client that is not a trusted proxy cannot choose the name it is logged by.
    """
    peer = request.remote_addr or "-"
    trusted = app_state().trusted_proxies
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [hop.strip() for hop in ",".join(request.headers.getlist("X-Forwarded-For")).split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else peer


def expected_state() -> Expected | None:
    """What the request's `If-Match` expects the service to be: `*` (it exists), or a list of
    ETags, quoted or not, weak (`W/`) or strong; None without the header."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    if header.strip() == "*":
        return Expected(exists=True)
    return Expected(etags=frozenset(t.strip().removeprefix("W/").strip('"') for t in header.split(",")))


def precondition_message(error: PreconditionFailed) -> str:
    return (
        f"service {error.name!r} changed since you read it (If-Match {request.headers.get('If-Match')}, "
        f"current ETag {error.current_etag or 'none: it does not exist'}); read it again and retry"
    )


def too_large_message(limit: int) -> str:
    return (
        f"request body is larger than {limit} bytes, the limit of this server "
        "(setting max_body_bytes, EDS_MAX_BODY_BYTES); nothing was changed"
    )


def error_body(error: RegistryError) -> dict[str, Any]:
    """The JSON of a refusal: the message, and for refused input each problem's field, value and rule."""
    body: dict[str, Any] = {"message": error.message}
    if error.problems:
        body["errors"] = [p.as_dict() for p in error.problems]
    return body


def status_of(error: RegistryError) -> int:
    return STATUS_OF.get(type(error), 400)


def log_refusal(method: str, path: str, reason: str) -> None:
    refusals.info("refused %s %s: %s", method, path, reason)


class EdsFlask(Flask):
    def log_exception(self, exc_info) -> None:
        """Tracebacks for bugs only: a store that is away is logged in one line by its handler,
        where flask-restx would log every 503 with the whole chain of the store client's frames."""
        if isinstance(exc_info[1], StoreUnavailable):
            return
        super().log_exception(exc_info)


def register_error_handlers(app: Flask, api: Api) -> None:
    # Outside restx's routes (unknown URLs, wrong methods) Flask would answer HTML.
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        message = too_large_message(limit) if isinstance(error, RequestEntityTooLarge) else error.description
        return {"message": message}, error.code

    @api.errorhandler(BodyRefused)
    def body_refused(error: BodyRefused):
        """413, 408 or 400: the request body was too large, stopped arriving, or broke; nothing was changed."""
        log_refusal(request.method, request.path, error.message)
        request.environ[CLOSE_CONNECTION] = True
        return {"message": error.message}, error.status

    @api.errorhandler(RegistryError)
    def registry_error(error: RegistryError):
        """400, 404, 409 or 412: the input, the service or the precondition, named in the message."""
        body = error_body(error)
        if isinstance(error, PreconditionFailed):
            body["message"] = precondition_message(error)
        log_refusal(request.method, request.path, body["message"])
        return body, status_of(error)

    @api.errorhandler(StoreUnavailable)
    def store_unavailable(error: StoreUnavailable):
        """503: the registry store cannot be reached; nothing was changed."""
        log.warning("store unavailable on %s %s: %s", request.method, request.path, error)
        return {"message": store_unavailable_message(error)}, 503


def store_unavailable_message(error: StoreUnavailable) -> str:
    if isinstance(error, CommitOutcomeUnknown):
        return f"the registry store is unavailable: {error}"
    return f"the registry store is unavailable, nothing was changed: {error}"
