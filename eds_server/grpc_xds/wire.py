"""Protobuf in and out: the core's requests and assignments as xds-protos messages, nothing else.

The core renders a ClusterLoadAssignment in the JSON form of Envoy's protos
(the one REST serves); here it becomes the protobuf message, packed into an
`Any` once per service version, so a write pushed to many streams is
converted once.
"""

from __future__ import annotations

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format

from ..xds.request import MAX_ERROR_MESSAGE_CHARS, MAX_LABEL_CHARS, MAX_NODE_ID_CHARS, bounded
from ..xds.resources import TYPE_URLS, V3
from ..xds.streams import Node

ASSIGNMENT_TYPE = TYPE_URLS[V3]
DiscoveryRequest = discovery_pb2.DiscoveryRequest
DiscoveryResponse = discovery_pb2.DiscoveryResponse
DeltaDiscoveryRequest = discovery_pb2.DeltaDiscoveryRequest
DeltaDiscoveryResponse = discovery_pb2.DeltaDiscoveryResponse
Resource = discovery_pb2.Resource


class Packer:
    """service name -> (version, Any) of its latest rendering; bounded like the core's own cache."""

    def __init__(self, size: int):
        self.size = size
        self._packed: dict[str, tuple[str, any_pb2.Any]] = {}

    def packed(self, name: str, version: str, assignment: dict) -> any_pb2.Any:
        cached = self._packed.get(name)
        if cached is not None and cached[0] == version:
            return cached[1]
        message = json_format.ParseDict(assignment, endpoint_pb2.ClusterLoadAssignment())
        packed = any_pb2.Any(type_url=ASSIGNMENT_TYPE, value=message.SerializeToString(deterministic=True))
        self._packed[name] = (version, packed)
        while len(self._packed) > self.size:
            self._packed.pop(next(iter(self._packed)))
        return packed


def node_of(request) -> Node:
    """The node of a (Delta)DiscoveryRequest: id, cluster and Envoy's version (major.minor.patch),
    kept to the lengths a REST poll's are."""
    node = request.node
    version = node.user_agent_build_version.version
    envoy_version = (
        f"{version.major_number}.{version.minor_number}.{version.patch}"
        if node.HasField("user_agent_build_version")
        else bounded(node.user_agent_version, MAX_LABEL_CHARS)
    )
    return Node(
        id=bounded(node.id, MAX_NODE_ID_CHARS),
        cluster=bounded(node.cluster, MAX_LABEL_CHARS),
        envoy_version=envoy_version,
    )


def error_message(request) -> str | None:
    """The NACK's error_detail.message; None for an ACK (no error_detail)."""
    if not request.HasField("error_detail"):
        return None
    return bounded(request.error_detail.message, MAX_ERROR_MESSAGE_CHARS) or "(no message)"
