"""What every namespace of the HTTP layer shares: reading bodies, mapping errors."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, current_app, request
from flask_restx import Api, Model, fields
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..model import (
    AlreadyExists,
    Expected,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PreconditionFailed,
    Problem,
    RegistryError,
)
from ..store import CommitOutcomeUnknown, StoreUnavailable

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


# Calls the token check (api/auth.py) may refuse document these.
AUTH_RESPONSES = {
    401: ("no bearer token, and this call needs one (WWW-Authenticate: Bearer)", error_model),
    403: ("the bearer token is not accepted for this call", error_model),
}
TOO_LARGE = (413, "the request body is over max_body_bytes; nothing was changed", error_model)

STATUS_OF = {
    InvalidInput: 400,
    LimitExceeded: 400,
    NotFound: 404,
    AlreadyExists: 409,
    PreconditionFailed: 412,
}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json() -> Any:
    """The request body as JSON; anything else is a 400 naming the parser's line and column."""
    raw = request.get_data(cache=False)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInput([Problem("body", f"<{len(raw)} bytes>", f"is not UTF-8 (byte {error.start})")]) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        hint = " (comments such as // are not allowed in JSON)" if "//" in text else ""
        raise InvalidInput(
            [
                Problem(
                    "body",
                    f"<{len(raw)} bytes>",
                    f"is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}{hint}",
                )
            ]
        ) from None
    except ValueError as error:
        raise InvalidInput([Problem("body", f"<{len(raw)} bytes>", f"is not valid JSON: {error}")]) from None
    except RecursionError:
        raise InvalidInput([Problem("body", f"<{len(raw)} bytes>", "nests arrays or objects too deeply")]) from None


def caller() -> str:
    """Who made a request, for the change log (never a credential)."""
    return request.headers.get("X-Forwarded-For", request.remote_addr or "-").split(",")[0].strip()


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
    """The JSON of a refusal: the message, and for invalid input each problem's field, value and rule."""
    body: dict[str, Any] = {"message": error.message}
    if isinstance(error, InvalidInput):
        body["errors"] = [p.as_dict() for p in error.problems]
    return body


def status_of(error: RegistryError) -> int:
    return STATUS_OF.get(type(error), 400)


def log_refusal(method: str, path: str, reason: str) -> None:
    refusals.info("refused %s %s: %s", method, path, reason)


def register_error_handlers(app: Flask, api: Api) -> None:
    # Outside restx's routes (unknown URLs, wrong methods) Flask would answer HTML.
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        message = too_large_message(limit) if isinstance(error, RequestEntityTooLarge) else error.description
        return {"message": message}, error.code

    @api.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge):
        """413: the request body is over the configured size limit."""
        log_refusal(request.method, request.path, "body over the size limit")
        return {"message": too_large_message(current_app.config["MAX_CONTENT_LENGTH"])}, 413

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
