"""xds-protos and googleapis-common-protos both install google/api and google/rpc (grpc/grpc#42830):
with the pinned versions, every module the gRPC server and Envoy's protos need imports, from either."""

import importlib

import pytest

MODULES = [
    "google.api.annotations_pb2",
    "google.api.http_pb2",
    "google.rpc.status_pb2",
    "google.rpc.code_pb2",
    "envoy.service.endpoint.v3.eds_pb2_grpc",
    "envoy.service.discovery.v3.ads_pb2_grpc",
    "envoy.service.discovery.v3.discovery_pb2",
    "envoy.config.endpoint.v3.endpoint_pb2",
    "eds_server.grpc_xds.servicers",
]


@pytest.mark.parametrize("name", MODULES)
def test_the_module_imports(name):
    importlib.import_module(name)


def test_the_servicers_are_the_ones_xds_protos_ships():
    from envoy.service.discovery.v3 import ads_pb2_grpc
    from envoy.service.endpoint.v3 import eds_pb2_grpc

    from eds_server.grpc_xds.servicers import AggregatedDiscovery, EndpointDiscovery

    assert issubclass(EndpointDiscovery, eds_pb2_grpc.EndpointDiscoveryServiceServicer)
    assert issubclass(AggregatedDiscovery, ads_pb2_grpc.AggregatedDiscoveryServiceServicer)


def test_a_nack_status_from_google_rpc_fills_error_detail():
    from envoy.service.discovery.v3 import discovery_pb2
    from google.rpc import status_pb2

    request = discovery_pb2.DiscoveryRequest(error_detail=status_pb2.Status(code=3, message="rejected"))
    assert request.error_detail.message == "rejected"
