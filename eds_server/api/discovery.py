"""The discovery calls Envoy makes: REST EDS v3 and v2, and the v1 SDS registration call."""

from __future__ import annotations

import logging

from flask import Response, current_app, request
from flask_restx import Namespace, Resource, fields

from ..model import NAME_PATTERN, validate_name
from ..xds.discovery import MAX_RESOURCE_NAMES, parse_request
from ..xds.render import TYPE_URLS, V2, V3, v1_registration
from .common import TOO_LARGE, error_model

ns = Namespace("discovery", description="What Envoy polls (REST-JSON xDS)", path="/")
log = logging.getLogger("eds_server.discovery")
ns.add_model(error_model.name, error_model)

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


def poll(api: str) -> Response:
    discovery = current_app.extensions["eds"].discovery
    poll_request = parse_request(api, request.get_data(cache=False))
    answer = discovery.answer(poll_request)
    log.debug(
        "poll api=%s node=%s names=%s held=%s status=%s version=%s",
        api,
        poll_request.node_id,
        ",".join(poll_request.names),
        poll_request.version_info,
        answer.status,
        answer.version,
    )
    if answer.status == 304:
        return Response(status=304)
    return Response(answer.body, status=200, content_type="application/json")


@ns.route("/v3/discovery:endpoints")
class DiscoveryV3(Resource):
    @ns.doc("discovery_v3")
    @ns.expect(request_model, validate=False)
    @ns.response(200, "a DiscoveryResponse with one v3 ClusterLoadAssignment per name", response_model)
    @ns.response(304, "version_info is already the current version")
    @ns.response(*BAD_REQUEST)
    @ns.response(*TOO_LARGE)
    def post(self):
        """Envoy's REST EDS poll (api_type: REST, transport_api_version: V3)."""
        return poll(V3)


@ns.route("/v2/discovery:endpoints")
class DiscoveryV2(Resource):
    @ns.doc("discovery_v2")
    @ns.expect(request_model, validate=False)
    @ns.response(200, "a DiscoveryResponse with envoy.api.v2 type URLs", response_model)
    @ns.response(304, "version_info is already the current version")
    @ns.response(*BAD_REQUEST)
    @ns.response(*TOO_LARGE)
    def post(self):
        """The same poll for legacy Envoys (1.17 and older); Envoy 1.40 never calls it."""
        return poll(V2)


@ns.route("/v1/registration/<string:name>")
@ns.param("name", "service name", pattern=NAME_PATTERN.pattern)
class RegistrationV1(Resource):
    @ns.doc("registration_v1")
    @ns.response(200, "the v1 SDS answer: hosts with ip_address, port and tags", v1_model)
    @ns.response(400, "not a service name", error_model)
    def get(self, name):
        """The v1 SDS call of the tutorial's REST_LEGACY note."""
        validate_name(name)
        return v1_registration(current_app.extensions["eds"].registry.store.get(name))
