"""What operators and orchestrators ask of the server itself: health, metrics, and the Envoy clients."""

from __future__ import annotations

from flask import Response, request
from flask_restx import Namespace, Resource, fields
from prometheus_client.core import GaugeMetricFamily

from ..model import NAME_PATTERN, validate_name
from ..store import StoreUnavailable
from ..telemetry import CONTENT_TYPE
from ..xds.clients import ClientStatus
from .auth import READ_SECURITY
from .common import AUTH_RESPONSES, error_model, nullable, timestamp
from .state import AppState, app_state

ns = Namespace("ops", description="Liveness, readiness, metrics and the Envoy clients", path="/")
ns.add_model(error_model.name, error_model)


@ns.route("/healthz")
class HealthRoute(Resource):
    @ns.doc("healthz")
    def get(self):
        """Alive: the process answers."""
        return {"status": "ok"}


@ns.route("/readyz")
class ReadyRoute(Resource):
    @ns.doc("readyz")
    @ns.response(200, "the store answers, and every part of the server runs")
    @ns.response(503, "the store cannot be reached, or a part (the gRPC process) died")
    def get(self):
        """Ready: the registry store answers and every part of the server (the gRPC process, if any) runs."""
        state = app_state()
        down = state.parts_down()
        if down:
            return {"status": "unavailable", "parts": down}, 503
        try:
            state.registry.ping()
        except StoreUnavailable as error:
            return {"status": "unavailable", "store": str(error)}, 503
        return {"status": "ok"}


def _live_metrics(state: AppState):
    """The facts read at scrape time, the same whichever worker is scraped."""

    def collect():
        service_count, host_count = state.registry.size()
        yield GaugeMetricFamily("eds_registry_services", "Services in the registry", value=service_count)
        yield GaugeMetricFamily("eds_registry_hosts", "Hosts in the registry, all services", value=host_count)
        statuses = state.core.clients.statuses()
        yield GaugeMetricFamily("eds_clients", "Envoy (node, resource name) pairs seen polling", value=len(statuses))
        yield GaugeMetricFamily(
            "eds_clients_in_sync", "Clients holding the current version", value=sum(s.in_sync for s in statuses)
        )
        yield GaugeMetricFamily(
            "eds_clients_stuck",
            "Clients that reported the version they had again after being sent the current one",
            value=sum(s.stuck for s in statuses),
        )

    return collect


@ns.route("/metrics")
class MetricsRoute(Resource):
    @ns.doc("metrics")
    @ns.produces([CONTENT_TYPE])
    @ns.response(200, "Prometheus text format: polls, writes, latencies, registry size, clients in sync and stuck")
    def get(self):
        """Prometheus metrics, added up across every worker of this server."""
        state = app_state()
        return Response(state.metrics.render(_live_metrics(state)), content_type=CONTENT_TYPE)


client_model = ns.model(
    "Client",
    {
        "node_id": fields.String(description="Envoy's node.id", example="edge-1"),
        "cluster": fields.String(description="Envoy's node.cluster"),
        "envoy_version": fields.String(description="from node.user_agent_build_version", example="1.40.0"),
        "resource_name": fields.String(description="the service this row is about", example="myservice"),
        "resource_names": fields.List(fields.String, description="every name the node's poll asked for"),
        "api": fields.String(enum=["v3", "v2"]),
        "version_held": nullable(
            fields.String(description="the version_info of its latest poll; null before it holds any")
        ),
        "current_version": fields.String(description="what it would be sent now"),
        "in_sync": fields.Boolean(description="version_held is the current version"),
        "last_poll": fields.String(description="ISO-8601 UTC", example="2026-01-01T12:00:00.000+00:00"),
        "polls": fields.Integer(description="polls seen, by every worker"),
        "stuck": fields.Boolean(
            description="REST: it reported the version it had again after it was sent the current one (REST has "
            "no NACK, this is how Envoy rejecting an update shows); gRPC: it NACKed the current version"
        ),
        "subscribed": fields.Boolean(
            description="its last sign of life (a poll arriving; a held poll, while held; an open stream) is at "
            "most subscribed_within seconds old: it counts in propagation waits"
        ),
        "transport": fields.String(enum=["rest", "grpc"]),
        "mode": fields.String(enum=["poll", "eds-sotw", "eds-delta", "ads-sotw", "ads-delta"]),
        "sent_version": nullable(fields.String(description="the version it was last sent; null before any")),
        "rejected": fields.Boolean(description="it rejected the current version (REST: stuck; gRPC: NACKed it)"),
        "rejected_version": nullable(
            fields.String(description="gRPC: the version it NACKed last; null once it ACKs one")
        ),
        "error": nullable(
            fields.String(description="gRPC: Envoy's error_detail.message for the NACK of the current version")
        ),
    },
)
clients_model = ns.model("Clients", {"clients": fields.List(fields.Nested(client_model))})


def client_json(status: ClientStatus, subscribed: bool) -> dict:
    row = status.row
    return {
        "node_id": row.node_id,
        "cluster": row.cluster,
        "envoy_version": row.envoy_version,
        "resource_name": row.resource_name,
        "resource_names": list(row.resource_names),
        "api": row.api,
        "version_held": row.version_held,
        "current_version": status.current_version,
        "in_sync": status.in_sync,
        "last_poll": timestamp(row.last_poll),
        "polls": row.polls,
        "stuck": status.stuck,
        "subscribed": subscribed,
        "transport": row.transport,
        "mode": row.mode,
        "sent_version": row.sent_version,
        "rejected": status.rejected,
        "rejected_version": row.rejected_version,
        "error": status.rejection,
    }


@ns.route("/clients")
class ClientsRoute(Resource):
    @ns.doc(
        "clients",
        security=READ_SECURITY,
        responses=AUTH_RESPONSES,
        params={
            "service": {
                "description": "only the rows of this resource name",
                "in": "query",
                "pattern": NAME_PATTERN.pattern,
            }
        },
    )
    @ns.response(200, "one row per Envoy node and resource name", clients_model)
    @ns.response(400, "service is not a service name", error_model)
    def get(self):
        """The Envoy nodes polling this server (any worker, any replica on the same store), and what each holds."""
        service = request.args.get("service")
        if service is not None:
            validate_name(service, "service")
        core = app_state().core
        statuses = core.clients.statuses(service)
        return {"clients": [client_json(s, core.propagation.subscribed(s)) for s in statuses]}
