"""The two gRPC services Envoy calls, as xds-protos defines them; each RPC is one `XdsStream`."""

from __future__ import annotations

from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.endpoint.v3 import eds_pb2_grpc

from ..xds.streams import DELTA, SOTW
from .streams import Hub, XdsStream


class EndpointDiscovery(eds_pb2_grpc.EndpointDiscoveryServiceServicer):
    """envoy.service.endpoint.v3.EndpointDiscoveryService: api_type GRPC and DELTA_GRPC."""

    def __init__(self, hub: Hub):
        self.hub = hub

    async def StreamEndpoints(self, request_iterator, context):  # noqa: N802 (the proto's name)
        await XdsStream(self.hub, context, SOTW, "eds").run()

    async def DeltaEndpoints(self, request_iterator, context):  # noqa: N802
        await XdsStream(self.hub, context, DELTA, "eds").run()


class AggregatedDiscovery(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """envoy.service.discovery.v3.AggregatedDiscoveryService (ADS), serving ClusterLoadAssignment."""

    def __init__(self, hub: Hub):
        self.hub = hub

    async def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802
        await XdsStream(self.hub, context, SOTW, "ads").run()

    async def DeltaAggregatedResources(self, request_iterator, context):  # noqa: N802
        await XdsStream(self.hub, context, DELTA, "ads").run()


def add_to(server, hub: Hub) -> None:
    eds_pb2_grpc.add_EndpointDiscoveryServiceServicer_to_server(EndpointDiscovery(hub), server)
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AggregatedDiscovery(hub), server)
