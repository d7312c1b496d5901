"""The discovery calls Envoy makes: REST EDS v3 and v2, and the v1 SDS registration call."""

from __future__ import annotations

import logging

from flask import Response, current_app, request
from flask_restx import Namespace, Resource, fields

from ..model import validate_name
from ..xds.discovery import parse_request
from ..xds.render import V2, V3, v1_registration

ns = Namespace("discovery", description="What Envoy polls (REST-JSON xDS)", path="/")
log = logging.getLogger("eds_server.discovery")

request_model = ns.model(
    "DiscoveryRequest",
    {
        "version_info": fields.String(description="the version Envoy last accepted; absent on its first poll"),
        "node": fields.Raw(example={"id": "test-node", "cluster": "test-cluster"}),
        "resource_names": fields.List(fields.String, required=True, example=["myservice"]),
        "type_url": fields.String(example="type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"),
    },
)
response_model = ns.model(
    "DiscoveryResponse",
    {
        "version_info": fields.String,
        "resources": fields.List(fields.Raw, description="one ClusterLoadAssignment per requested name"),
        "type_url": fields.String,
        "nonce": fields.String,
    },
)


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
    @ns.response(400, "not a DiscoveryRequest")
    def post(self):
        """Envoy's REST EDS poll (api_type: REST, transport_api_version: V3)."""
        return poll(V3)


@ns.route("/v2/discovery:endpoints")
class DiscoveryV2(Resource):
    @ns.doc("discovery_v2")
    @ns.expect(request_model, validate=False)
    @ns.response(200, "a DiscoveryResponse with envoy.api.v2 type URLs", response_model)
    @ns.response(304, "version_info is already the current version")
    @ns.response(400, "not a DiscoveryRequest")
    def post(self):
        """The same poll for legacy Envoys (1.17 and older); Envoy 1.40 never calls it."""
        return poll(V2)


@ns.route("/v1/registration/<string:name>")
class RegistrationV1(Resource):
    @ns.doc("registration_v1")
    @ns.response(200, "the v1 SDS answer: hosts with ip_address, port and tags")
    def get(self, name):
        """The v1 SDS call of the tutorial's REST_LEGACY note."""
        validate_name(name)
        return v1_registration(current_app.extensions["eds"].registry.store.get(name))
