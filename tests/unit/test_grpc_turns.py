"""One stream subscribing thousands of names at once does not keep the gRPC process from the other
streams: while it reads and packs them, a write's push still reaches a stream subscribed elsewhere."""

import time

import grpc

from eds_server.registry import Registry
from eds_server.store import open_store
from eds_server.xds import DiscoveryCore, version_of
from scripts.xds_client import CLA, XdsStream
from tests.helpers.discovery import put
from tests.helpers.grpc_in_process import InProcessGrpc

SLOW_NAMES = 3000


class _SlowToRead(DiscoveryCore):
    """Names starting `slow-` take a millisecond each to read: thousands of them, seconds."""

    def resource(self, name: str) -> tuple[str, dict]:
        if name.startswith("slow-"):
            time.sleep(0.001)
        return super().resource(name)


def test_a_write_reaches_the_other_streams_while_one_stream_reads_thousands_of_names(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/registry.db", version_of)
    server = InProcessGrpc(store, core_type=_SlowToRead).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        registry = Registry(store)
        put(registry, 8001)
        healthy = XdsStream(channel, "StreamAggregatedResources")
        healthy.send(node={"id": "healthy"}, resource_names=["web"], type_url=CLA)
        first = healthy.receive()
        healthy.send(version_info=first.version_info, response_nonce=first.nonce, resource_names=["web"])
        big = XdsStream(channel, "DeltaAggregatedResources")
        big.send(node={"id": "big"}, resource_names_subscribe=[f"slow-{i}" for i in range(SLOW_NAMES)], type_url=CLA)
        time.sleep(0.3)  # the gRPC process is reading the slow names: about 3 s of them
        version = put(registry, 8001, 8002)
        assert healthy.receive(timeout=1.5).version_info == version  # not after the 3 s
        assert len(big.receive(timeout=60).resources) == SLOW_NAMES
        for stream in (healthy, big):
            stream.close()
    finally:
        channel.close()
        server.stop()
        store.close()
