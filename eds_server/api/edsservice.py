"""`/edsservice`: the registry API (the classic tutorial's calls; README.md#the-registry-api)."""

from __future__ import annotations

from time import perf_counter

from flask import Flask, Response, g, request, url_for
from flask_restx import Namespace, Resource, fields

from ..model import (
    HEALTH_STATUSES,
    InvalidInput,
    NotFound,
    Problem,
    Service,
    parse_endpoint,
    validate_name,
)
from ..model.host import (
    HOSTNAME_PATTERN,
    MAX_LABEL_LENGTH,
    MAX_METADATA_BYTES,
    MAX_PRIORITY,
    MAX_TTL_SECONDS,
    MAX_WEIGHT,
    MIN_SECONDS,
)
from ..model.service import MAX_OVERPROVISIONING_FACTOR, MAX_STALE_AFTER_SECONDS
from ..registry import export
from ..store import Change
from ..xds import version_of
from .auth import READ_SECURITY, WRITE_SECURITY
from .common import (
    AUTH_RESPONSES,
    BODY_STOPPED,
    NAME_PARAM,
    NOT_JSON,
    TOO_LARGE,
    caller,
    error_model,
    expected_state,
    nullable,
    read_json,
)
from .propagation import WAIT_OUTCOMES, WAIT_PARAM, answer_after_wait, propagation_model, requested_wait
from .state import app_state

ns = Namespace("edsservice", description="Services and their upstream hosts", path="/edsservice")

ns.add_model(error_model.name, error_model)

# The shape of an IP literal and of IP:PORT, for the document and its clients; the model
# applies the exact rule (a real address, no zone id), so these may be looser, never stricter.
_IP = r"\[?(\d{1,3}(\.\d{1,3}){3}|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)\]?"
IP_PATTERN = rf"^\s*{_IP}\s*$"
ENDPOINT_PATTERN = rf"^\s*{_IP}\s*:[0-9]+$"
tags_model = ns.model(
    "Tags",
    {
        "az": nullable(
            fields.String(max_length=MAX_LABEL_LENGTH, description="zone; Envoy locality.zone", example="us-central1-a")
        ),
        "region": nullable(
            fields.String(max_length=MAX_LABEL_LENGTH, description="Envoy locality.region", example="us-central1")
        ),
        "sub_zone": nullable(
            fields.String(max_length=MAX_LABEL_LENGTH, description="Envoy locality.sub_zone", example="rack7")
        ),
        "canary": nullable(fields.Boolean(description='metadata filter_metadata["envoy.lb"].canary', default=False)),
        "load_balancing_weight": nullable(
            fields.Integer(
                min=1,
                max=MAX_WEIGHT,
                default=1,
                example=50,
                description="LbEndpoint.load_balancing_weight (Envoy rejects 0)",
            )
        ),
    },
)
# The fields a host may leave out (null reads as left out); a PATCH changes any of them.
optional_host_fields = {
    "tags": nullable(fields.Nested(tags_model)),
    "health_status": nullable(fields.String(enum=list(HEALTH_STATUSES), default="HEALTHY")),
    "priority": nullable(fields.Integer(min=0, max=MAX_PRIORITY, default=0, description="0 is the most preferred")),
    "hostname": nullable(
        fields.String(
            pattern=f"^$|{HOSTNAME_PATTERN.pattern}", example="web-1", description="LbEndpoint.endpoint.hostname"
        )
    ),
    "metadata": nullable(
        fields.Raw(
            example={"version": "v2"},
            description=f'extra filter_metadata["envoy.lb"] keys, at most {MAX_METADATA_BYTES} bytes as JSON',
        )
    ),
    "ttl": nullable(
        fields.Float(
            min=MIN_SECONDS,
            max=MAX_TTL_SECONDS,
            example=30,
            description="seconds; the host leaves discovery unless refreshed within it",
        )
    ),
}
host_model = ns.model(
    "Host",
    {
        "ip_address": fields.String(
            required=True,
            example="10.0.0.5",
            pattern=IP_PATTERN,
            description="IPv4 or IPv6 literal ([::1] accepted); not a host name",
        ),
        "port": fields.Integer(required=True, min=1, max=65535, example=8001),
        **optional_host_fields,
        "expires_in": fields.Float(
            readonly=True,
            example=27.5,
            description="seconds left before the ttl runs out (hosts with a ttl only); "
            "read-only: ignored in a request body",
        ),
    },
)
host_patch_model = ns.model("HostPatch", optional_host_fields)
policy_model = ns.model(
    "Policy",
    {
        "overprovisioning_factor": nullable(
            fields.Integer(min=1, max=MAX_OVERPROVISIONING_FACTOR, example=140, description="percent")
        ),
        "endpoint_stale_after": nullable(
            fields.Float(min=MIN_SECONDS, max=MAX_STALE_AFTER_SECONDS, example=30, description="seconds")
        ),
    },
)
service_input = ns.model(
    "ServiceInput",
    {
        "hosts": fields.List(fields.Nested(host_model), required=True),
        "policy": nullable(fields.Nested(policy_model)),
    },
)
PROPAGATION_FIELD = fields.Nested(
    propagation_model, description="only with ?wait: whether the change reached every Envoy polling the service"
)
service_output = ns.inherit(
    "Service",
    service_input,
    {
        "name": fields.String(example="myservice"),
        "version": fields.String(description="the version_info Envoy gets for this service"),
        "propagation": PROPAGATION_FIELD,
    },
)
NOT_PROPAGATED = {
    "message": fields.String(required=True, description="the write was applied; which Envoys do not have it")
}
service_not_propagated = ns.inherit("ServiceNotPropagated", service_output, NOT_PROPAGATED)
deleted_output = ns.model(
    "DeletedService",
    {
        "name": fields.String(example="myservice"),
        "version": fields.String(description="the version_info of no endpoints, what Envoy is sent now"),
        "propagation": PROPAGATION_FIELD,
    },
)
deleted_not_propagated = ns.inherit("DeletedServiceNotPropagated", deleted_output, NOT_PROPAGATED)


# The answers ?wait adds to a write's: the service, or for a deleted one its name and version.
WAITED = {status: (description, service_not_propagated) for status, description in WAIT_OUTCOMES.items()}
WAITED_DELETE = {status: (description, deleted_not_propagated) for status, description in WAIT_OUTCOMES.items()}

IF_MATCH_DOC = {"If-Match": {"description": "ETag read earlier; 412 when the service changed since", "in": "header"}}
WRITE_PARAMS = {**IF_MATCH_DOC, **WAIT_PARAM}


# (method, route) -> the operation's name, as in the registry's change log and the metrics.
WRITE_OPERATIONS = {
    ("POST", "/edsservice/<string:name>"): "create",
    ("PUT", "/edsservice/<string:name>"): "replace",
    ("DELETE", "/edsservice/<string:name>"): "delete",
    ("POST", "/edsservice/<string:name>/hosts"): "upsert-host",
    ("PATCH", "/edsservice/<string:name>/hosts/<string:endpoint>"): "patch-host",
    ("DELETE", "/edsservice/<string:name>/hosts/<string:endpoint>"): "delete-host",
}


def measure_writes(app: Flask) -> None:
    """Count and time every write, whatever its outcome (refusals included)."""

    @app.before_request
    def start_clock():
        g.started = perf_counter()

    @app.after_request
    def count_write(response):
        rule = request.url_rule
        operation = WRITE_OPERATIONS.get((request.method, rule.rule if rule else None))
        if operation is not None:
            # With ?wait, the write's own outcome and time (api/propagation.py), not the wait's.
            status, waited = g.get("write_status", response.status_code), g.get("waited", 0.0)
            app_state().metrics.write_answered(operation, status, g.started + waited)
        return response


def service_body(service: Service, version: str | None = None) -> dict:
    body = service.to_view(app_state().registry.now())
    # The version of this very state (a write's own, or computed), never read
    # again: a write landing in between would pair these hosts with another's.
    body["version"] = version or version_of(service.name, service)
    return body


def etag(service: Service) -> dict[str, str]:
    return {"ETag": f'"{service.etag}"'}


def service_url(name: str) -> str:
    return url_for("edsservice_service", name=name)


def answer(
    change: Change,
    wait: float | None,
    created: bool | None = None,
    location: str | None = None,
    with_body: bool = True,
):
    """The service after a write with its ETag: 201 (and Location) when `created`
    (by default: when the service is new), 200 otherwise, 204 when it was deleted
    or `with_body` is False. With `wait` (the request's ?wait), once the change
    reached every Envoy, or the wait says why not (see api/propagation.py)."""
    service = change.after
    if service is None:
        body, status, headers = None, 204, {}
    else:
        if created is None:
            created = change.before is None
        body = service_body(service, change.version_after) if with_body or wait is not None else None
        status = 201 if created else (200 if body is not None else 204)
        headers = {**etag(service), **({"Location": location or service_url(service.name)} if created else {})}
    if wait is not None:
        return answer_after_wait(change, body, status, headers, wait)
    return body if body is not None else "", status, headers


EXPORT_FORMATS = ("json", "yaml")


@ns.route("")
@ns.doc(responses=AUTH_RESPONSES)
class ServiceList(Resource):
    @ns.doc(
        "list_services",
        security=READ_SECURITY,
        params={
            "format": {
                "description": "json (default), or yaml: the seed file format, to load into another server "
                "with EDS_SEED_FILE",
                "enum": list(EXPORT_FORMATS),
                "in": "query",
            }
        },
    )
    @ns.produces(["application/json", "application/yaml"])
    @ns.response(200, "every service with its hosts (JSON); with format=yaml, the seed file", [service_output])
    @ns.response(400, "unknown format", error_model)
    def get(self):
        """Every service with its hosts; `?format=yaml` exports the registry as a seed file."""
        wanted = request.args.get("format", "json")
        if wanted not in EXPORT_FORMATS:
            raise InvalidInput([Problem("format", wanted, f"must be one of {', '.join(EXPORT_FORMATS)}")])
        services = app_state().registry.services()
        if wanted == "yaml":
            return Response(export(services), content_type="application/yaml; charset=utf-8")
        return [service_body(s) for s in services]


@ns.route("/<string:name>", endpoint="edsservice_service")
@ns.param("name", **NAME_PARAM)
@ns.response(400, "invalid input: the field, value and rule are named", error_model)
@ns.doc(responses=AUTH_RESPONSES)
class ServiceItem(Resource):
    @ns.doc("get_service", security=READ_SECURITY)
    @ns.response(200, "the service; its ETag is in the header", service_output)
    @ns.response(404, "no such service", error_model)
    def get(self, name):
        """One service with its hosts."""
        validate_name(name)
        service = app_state().registry.get(name)
        if service is None:
            raise NotFound(f"service {name!r} does not exist")
        return service_body(service), 200, etag(service)

    @ns.response(*TOO_LARGE)
    @ns.response(*NOT_JSON)
    @ns.response(*BODY_STOPPED)
    @ns.doc("create_service", params=WRITE_PARAMS, security=WRITE_SECURITY, responses=WAITED)
    @ns.expect(service_input, validate=False)
    @ns.response(201, "created", service_output)
    @ns.response(409, "it exists already; PUT replaces it", error_model)
    @ns.response(412, "If-Match was given: a service that does not exist matches no ETag", error_model)
    def post(self, name):
        """Create a service with its hosts."""
        wait = requested_wait()
        return answer(app_state().registry.create(name, read_json(), expected_state(), who=caller()), wait)

    @ns.response(*TOO_LARGE)
    @ns.response(*NOT_JSON)
    @ns.response(*BODY_STOPPED)
    @ns.doc("replace_service", params=WRITE_PARAMS, security=WRITE_SECURITY, responses=WAITED)
    @ns.expect(service_input, validate=False)
    @ns.response(200, "replaced", service_output)
    @ns.response(201, "created", service_output)
    @ns.response(412, "If-Match did not match: the service changed meanwhile", error_model)
    def put(self, name):
        """Create a service or replace its whole host list (`{"hosts": []}` empties it)."""
        wait = requested_wait()
        return answer(app_state().registry.replace(name, read_json(), expected_state(), who=caller()), wait)

    @ns.doc("delete_service", params=WRITE_PARAMS, security=WRITE_SECURITY, responses=WAITED_DELETE)
    @ns.response(204, "deleted; Envoy is told the service has no endpoints")
    @ns.response(200, "with ?wait: deleted, and every Envoy polling it has no endpoints for it now", deleted_output)
    @ns.response(404, "no such service", error_model)
    @ns.response(412, "If-Match did not match", error_model)
    def delete(self, name):
        """Remove a service."""
        wait = requested_wait()
        return answer(app_state().registry.delete(name, expected_state(), who=caller()), wait)


@ns.route("/<string:name>/hosts")
@ns.param("name", **NAME_PARAM)
@ns.response(400, "invalid input", error_model)
@ns.doc(responses=AUTH_RESPONSES)
class HostList(Resource):
    @ns.response(*TOO_LARGE)
    @ns.response(*NOT_JSON)
    @ns.response(*BODY_STOPPED)
    @ns.doc("upsert_host", params=WRITE_PARAMS, security=WRITE_SECURITY, responses=WAITED)
    @ns.expect(host_model, validate=False)
    @ns.response(201, "host added (the service is created when absent)", service_output)
    @ns.response(200, "host refreshed or replaced (a heartbeat)", service_output)
    @ns.response(412, "If-Match did not match", error_model)
    def post(self, name):
        """Add or refresh one host, keyed by ip_address and port: a registration or a heartbeat."""
        wait = requested_wait()
        change, host, created = app_state().registry.upsert_host(name, read_json(), expected_state(), who=caller())
        return answer(change, wait, created, location=f"{service_url(name)}/hosts/{host.endpoint}")


@ns.route("/<string:name>/hosts/<string:endpoint>")
@ns.param("name", **NAME_PARAM)
@ns.param("endpoint", "IP:PORT, IPv6 in brackets: 10.0.0.5:8001 or [::1]:8001", pattern=ENDPOINT_PATTERN)
@ns.response(400, "invalid input", error_model)
@ns.response(404, "no such service or host", error_model)
@ns.response(412, "If-Match did not match", error_model)
@ns.doc(responses=AUTH_RESPONSES)
class HostItem(Resource):
    @ns.response(*TOO_LARGE)
    @ns.response(*NOT_JSON)
    @ns.response(*BODY_STOPPED)
    @ns.doc("patch_host", params=WRITE_PARAMS, security=WRITE_SECURITY, responses=WAITED)
    @ns.expect(host_patch_model, validate=False)
    @ns.response(200, "changed", service_output)
    def patch(self, name, endpoint):
        """Change some fields of one host (JSON merge patch: null removes a field)."""
        wait = requested_wait()
        endpoint = parse_endpoint(endpoint)
        return answer(
            app_state().registry.patch_host(name, endpoint, read_json(), expected_state(), who=caller()), wait
        )

    @ns.doc("delete_host", params=WRITE_PARAMS, security=WRITE_SECURITY, responses=WAITED)
    @ns.response(204, "removed; the ETag header names the service's new state")
    @ns.response(200, "with ?wait: removed, and every Envoy polling the service has it", service_output)
    def delete(self, name, endpoint):
        """Remove one host (the service stays, with the hosts left)."""
        wait = requested_wait()
        change = app_state().registry.delete_host(name, parse_endpoint(endpoint), expected_state(), who=caller())
        return answer(change, wait, created=False, with_body=False)
