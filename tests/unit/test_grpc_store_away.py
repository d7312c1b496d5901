"""A store that cannot be read ends the gRPC streams that need it with UNAVAILABLE (Envoy keeps its
endpoints and reconnects), and the others serve on."""

import grpc

from eds_server.store import StoreUnavailable, open_store
from eds_server.xds import DiscoveryCore, version_of
from scripts.xds_client import NODE, XdsStream, assignments
from tests.helpers.grpc_in_process import InProcessGrpc


class AwayForOneService(DiscoveryCore):
    def resource(self, name):
        if name == "unreadable":
            raise StoreUnavailable("redis at 10.0.0.9:6379 does not answer")
        return super().resource(name)


def test_a_store_error_ends_only_the_streams_that_need_it(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/registry.db", version_of)
    server = InProcessGrpc(store, AwayForOneService).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            failing, fine = XdsStream(channel, "StreamEndpoints"), XdsStream(channel, "DeltaEndpoints")
            failing.send(node=NODE, resource_names=["unreadable"])
            ended = failing.ended()
            assert ended.code == grpc.StatusCode.UNAVAILABLE and "10.0.0.9:6379 does not answer" in ended.details
            fine.send(node=NODE, resource_names_subscribe=["readable"])
            assert "readable" in assignments(fine.receive())
            fine.close()
    finally:
        server.stop()
        store.close()
