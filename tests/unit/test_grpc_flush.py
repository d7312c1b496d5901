"""The clients view's flush waits for a change's pushes to be answered (so that a fan-out to thousands of
streams is not slowed by it), and no longer than `Hub.flush_waits_for_pushes_at_most`."""

import grpc

from eds_server.grpc_xds.streams import Hub
from eds_server.model import Service, parse_host
from eds_server.store import open_store
from eds_server.xds import version_of
from scripts.processes import wait_until
from scripts.xds_client import XdsStream
from tests.helpers.grpc_in_process import InProcessGrpc

CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def add(port: int):
    host = parse_host({"ip_address": "10.0.0.1", "port": port})
    return lambda service: (service or Service("web")).with_host(host)[0]


def _acked(store, node: str) -> str | None:
    """The version the stored clients view says `node` holds of web (what propagation waits read)."""
    return next((row.version_held for row in store.clients() if row.node_id == node), None)


def _subscribed(channel, node: str) -> XdsStream:
    stream = XdsStream(channel, "StreamAggregatedResources")
    stream.send(node={"id": node}, resource_names=["web"], type_url=CLA)
    return stream


def _ack(stream: XdsStream, response) -> None:
    stream.send(version_info=response.version_info, response_nonce=response.nonce, resource_names=["web"],
                type_url=CLA)  # fmt: skip


def _two_streams_then_a_change(store, server):
    store.update("web", add(8001))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    answering, silent = _subscribed(channel, "answering"), _subscribed(channel, "silent")
    for stream in (answering, silent):
        _ack(stream, stream.receive())
    wait_until(lambda: _acked(store, "silent"), 10, what="both streams' first ACKs in the clients view")
    version = store.update("web", add(8002)).version_after
    _ack(answering, answering.receive())
    pushed_to_silent = silent.receive()  # read, never answered (yet)
    return channel, answering, silent, pushed_to_silent, version


def test_the_flush_waits_until_every_push_of_a_change_is_answered(tmp_path, monkeypatch):
    monkeypatch.setattr(Hub, "flush_waits_for_pushes_at_most", 60.0)
    store = open_store(f"sqlite:///{tmp_path}/registry.db", version_of)
    server = InProcessGrpc(store).start()  # flushes every 0.2 s
    try:
        channel, answering, silent, pushed, version = _two_streams_then_a_change(store, server)
        assert answering.nothing_within(1.0)  # five flush intervals: none flushed, silent's push is unanswered
        assert _acked(store, "answering") != version
        _ack(silent, pushed)
        wait_until(lambda: _acked(store, "answering") == version == _acked(store, "silent"), 10, what="the flush")
        for stream in (answering, silent):
            stream.close()
        channel.close()
    finally:
        server.stop()
        store.close()


def test_a_stream_that_never_answers_holds_the_flush_back_only_so_long(tmp_path, monkeypatch):
    monkeypatch.setattr(Hub, "flush_waits_for_pushes_at_most", 0.5)
    store = open_store(f"sqlite:///{tmp_path}/registry.db", version_of)
    server = InProcessGrpc(store).start()
    try:
        channel, answering, silent, _, version = _two_streams_then_a_change(store, server)
        wait_until(lambda: _acked(store, "answering") == version, 10, what="the flush, at its bound")
        assert _acked(store, "silent") != version
        for stream in (answering, silent):
            stream.close()
        channel.close()
    finally:
        server.stop()
        store.close()
