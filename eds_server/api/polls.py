"""The discovery calls Envoy makes: REST EDS v3 and v2, and the v1 SDS registration call.

Envoy's polls are the hot path, so `PollRoutes` answers them as plain WSGI in
front of Flask: a poll costs what a bare WSGI route costs plus the body parse
(a digest, for the body its connection sent last) and one version read, not a
Flask request context, routing and response object (which together cost more
than the rest of the poll, see docs/PERFORMANCE.md). The flask-restx resources
below document the same two routes in Swagger and answer through the same
`PollRoutes.respond`.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from time import perf_counter

import orjson
from flask import Response, request
from flask_restx import Namespace, Resource, fields

from ..model import NAME_PATTERN, RegistryError, validate_name
from ..store import StoreUnavailable
from ..xds.render import v1_registration
from ..xds.request import MAX_RESOURCE_NAMES, MalformedPoll, ParsedPerConnection
from ..xds.resources import PATH_OF, POLL_PATHS, REGISTRATION_V1_PATH, TYPE_URLS, V2, V3
from .common import (
    BODY_STOPPED,
    CLOSE_CONNECTION,
    TOO_LARGE,
    BodyRefused,
    error_body,
    error_model,
    log_refusal,
    read_body,
    status_of,
    store_unavailable_message,
)
from .state import AppState, app_state

ns = Namespace("discovery", description="What Envoy polls (REST-JSON xDS)", path="/")
log = logging.getLogger("eds_server.polls")
ns.add_model(error_model.name, error_model)

JSON_HEADERS = [("Content-Type", "application/json")]


STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
# The most digits of x-envoy-expected-rq-timeout-ms read: 10**12 ms is 31 years, longer than any hold.
MAX_TIMEOUT_DIGITS = 12


class PollRoutes:
    """WSGI middleware: POSTs to the discovery paths are answered here, everything else goes on to Flask."""

    def __init__(self, app, state: AppState):
        self.app = app
        self.core = state.core
        self.metrics = state.metrics
        self.max_body_bytes = state.settings.max_body_bytes
        self.max_hold = state.settings.long_poll_max_hold
        self.hold_margin = state.settings.long_poll_margin
        self.parser = ParsedPerConnection()

    def __call__(self, environ, start_response):
        api = POLL_PATHS.get(environ.get("PATH_INFO", ""))
        if api is None or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        status, headers, body = self.respond(api, environ)
        start_response(status, headers)
        return [body]

    def respond(self, api: str, environ: dict) -> tuple[str, list[tuple[str, str]], bytes]:
        """One poll: (status line, headers, body). Bad input is a JSON 4xx, never a 500."""
        started = perf_counter()
        try:
            # gunicorn hands the app the client's socket: it lives as long as the connection.
            # (The body is not kept in a local: a held poll would keep its 77 KB.)
            poll = self.parser.parse(api, read_body(environ, self.max_body_bytes), environ.get("gunicorn.socket"))
            # gunicorn's access log line carries the node (see serving/logs.py).
            environ["eds.node"] = poll.node_id
            answer = self.core.poll(poll, self.hold_for(environ))
            status, body = answer.status, answer.body
        except MalformedPoll as error:
            if error.node_id:
                environ["eds.node"] = error.node_id
            reason = f"{error.message} (node {error.node_id})" if error.node_id else error.message
            status, body = self._refuse(environ, status_of(error), reason, error_body(error))
        except RegistryError as error:
            status, body = self._refuse(environ, status_of(error), error.message, error_body(error))
        except BodyRefused as error:
            status, body = self._refuse(environ, error.status, error.message, {"message": error.message})
            environ[CLOSE_CONNECTION] = True
        except StoreUnavailable as error:
            log.warning("store unavailable on poll: %s", error)
            status, body = 503, orjson.dumps({"message": store_unavailable_message(error)})
        self.metrics.poll_answered(api, status, started, answer.held if status < 400 else 0.0)
        # An explicit length spares both sides chunked framing; a 304 has no body.
        headers = [*JSON_HEADERS, ("Content-Length", str(len(body)))] if status != 304 else []
        return STATUS_LINES[status], headers, body

    def hold_for(self, environ: dict) -> float:
        """Seconds this poll may be held: never longer than the client said it waits, minus a margin.

        Envoy announces its request_timeout in x-envoy-expected-rq-timeout-ms on
        every poll, in milliseconds (docs/PROTOCOL.md#when-envoy-polls); a client
        without it (curl, a load generator) is never held, and neither is one whose
        value is not a plain number (the header is a hint: it is ignored, the poll
        still answered).
        """
        announced = environ.get("HTTP_X_ENVOY_EXPECTED_RQ_TIMEOUT_MS")
        if not announced or not self.max_hold:
            return 0.0
        if len(announced) > MAX_TIMEOUT_DIGITS or not (announced.isascii() and announced.isdigit()):
            return 0.0
        return max(0.0, min(self.max_hold, int(announced) / 1000 - self.hold_margin))

    @staticmethod
    def _refuse(environ: dict, status: int, reason: str, body: dict) -> tuple[int, bytes]:
        log_refusal(environ["REQUEST_METHOD"], environ["PATH_INFO"], reason)
        return status, orjson.dumps(body)


def _answer_in_flask(api: str) -> Response:
    status, headers, body = app_state().answer_poll(api, request.environ)
    return Response(body, status=int(status[:3]), headers=headers)


node_model = ns.model(
    "Node",
    {
        "id": fields.String(example="test-node"),
        "cluster": fields.String(example="test-cluster"),
    },
    description="envoy.config.core.v3.Node: the other fields Envoy sends are accepted when they have their JSON type",
)
request_model = ns.model(
    "DiscoveryRequest",
    {
        "version_info": fields.String(description="the version Envoy last accepted; absent on its first poll"),
        "node": fields.Nested(node_model),
        "resource_names": fields.List(
            fields.String(pattern=NAME_PATTERN.pattern),
            required=True,
            min_items=1,
            max_items=MAX_RESOURCE_NAMES,
            example=["myservice"],
        ),
        "type_url": fields.String(example=TYPE_URLS[V3], description=f"{TYPE_URLS[V3]} (v3) or {TYPE_URLS[V2]} (v2)"),
        "response_nonce": fields.String(),
    },
)
response_model = ns.model(
    "DiscoveryResponse",
    {
        "version_info": fields.String(required=True),
        "resources": fields.List(fields.Raw, required=True, description="one ClusterLoadAssignment per requested name"),
        "type_url": fields.String(required=True),
        "nonce": fields.String(required=True),
    },
)
v1_host_model = ns.model(
    "RegistrationV1Host",
    {
        "ip_address": fields.String(required=True),
        "port": fields.Integer(required=True, min=1, max=65535),
        "tags": fields.Raw(required=True, description="az, canary, load_balancing_weight"),
    },
)
v1_model = ns.model("RegistrationV1", {"hosts": fields.List(fields.Nested(v1_host_model), required=True)})
BAD_REQUEST = (400, "not a DiscoveryRequest: the field and the rule are named", error_model)
# Documented as a string: the protocol makes it a hint, so a value that is not a number is ignored, never refused.
TIMEOUT_HEADER = {
    "x-envoy-expected-rq-timeout-ms": {
        "in": "header",
        "type": "string",
        "description": "Envoy's request_timeout in milliseconds: a poll with nothing new is held for less than "
        "this (long-poll); without it, or when it is not a plain number, the poll is answered at once",
    }
}


@ns.route(PATH_OF[V3])
class DiscoveryV3(Resource):
    @ns.doc("discovery_v3", params=TIMEOUT_HEADER)
    @ns.expect(request_model, validate=False)
    @ns.response(200, "a DiscoveryResponse with one v3 ClusterLoadAssignment per name", response_model)
    @ns.response(304, "version_info is already the current version")
    @ns.response(*BAD_REQUEST)
    @ns.response(*TOO_LARGE)
    @ns.response(*BODY_STOPPED)
    def post(self):
        """Envoy's REST EDS poll (api_type: REST, transport_api_version: V3)."""
        return _answer_in_flask(V3)


@ns.route(PATH_OF[V2])
class DiscoveryV2(Resource):
    @ns.doc("discovery_v2", params=TIMEOUT_HEADER)
    @ns.expect(request_model, validate=False)
    @ns.response(200, "a DiscoveryResponse with envoy.api.v2 type URLs", response_model)
    @ns.response(304, "version_info is already the current version")
    @ns.response(*BAD_REQUEST)
    @ns.response(*TOO_LARGE)
    @ns.response(*BODY_STOPPED)
    def post(self):
        """The same poll for legacy Envoys (1.17 and older); Envoy 1.40 never calls it."""
        return _answer_in_flask(V2)


@ns.route(REGISTRATION_V1_PATH + "/<string:name>")
@ns.param("name", "service name", pattern=NAME_PATTERN.pattern)
class RegistrationV1(Resource):
    @ns.doc("registration_v1")
    @ns.response(200, "the v1 SDS answer: hosts with ip_address, port and tags", v1_model)
    @ns.response(400, "not a service name", error_model)
    def get(self, name):
        """The v1 SDS call of the tutorial's REST_LEGACY note."""
        validate_name(name)
        return v1_registration(app_state().registry.get(name))
