"""The names of the protocol, each spelled once: API versions, type URLs, discovery paths."""

from __future__ import annotations

V3 = "v3"
V2 = "v2"
TYPE_URLS = {
    V3: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    V2: "type.googleapis.com/envoy.api.v2.ClusterLoadAssignment",
}
# REST-JSON xDS: Envoy POSTs a DiscoveryRequest to the path of its API version.
POLL_PATHS = {"/v3/discovery:endpoints": V3, "/v2/discovery:endpoints": V2}
PATH_OF = {api: path for path, api in POLL_PATHS.items()}
# The v1 SDS call of the classic tutorial's REST_LEGACY note.
REGISTRATION_V1_PATH = "/v1/registration"
