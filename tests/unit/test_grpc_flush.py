"""The gRPC process's clients view: its flush waits for a change's pushes to be answered (so that a
fan-out to thousands of streams is not slowed by it), and no longer than
`Hub.flush_waits_for_pushes_at_most`; and a quiet open stream's rows are noted again, so that it
still counts as a subscribed Envoy."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from eds_server.grpc_xds.streams import Hub
from eds_server.registry import Registry
from eds_server.store import Store, open_store
from eds_server.xds import version_of
from scripts.processes import wait_until
from scripts.xds_client import XdsStream
from tests.helpers.discovery import put
from tests.helpers.grpc_in_process import InProcessGrpc

CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


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


@dataclass
class AfterAChange:
    """Two streams on web, both of whose first responses were ACKed; then a change, whose push
    `answering` ACKed and `silent` read but has not answered."""

    store: Store
    answering: XdsStream
    silent: XdsStream
    pushed_to_silent: object
    version: str


@contextmanager
def after_a_change(tmp_path) -> Iterator[AfterAChange]:
    store = open_store(f"sqlite:///{tmp_path}/registry.db", version_of)
    server = InProcessGrpc(store).start()  # flushes every 0.2 s
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        registry = Registry(store)
        put(registry, 8001)
        answering, silent = _subscribed(channel, "answering"), _subscribed(channel, "silent")
        for stream in (answering, silent):
            _ack(stream, stream.receive())
        wait_until(lambda: _acked(store, "silent"), 10, what="both streams' first ACKs in the clients view")
        version = put(registry, 8001, 8002)
        _ack(answering, answering.receive())
        yield AfterAChange(store, answering, silent, silent.receive(), version)
        for stream in (answering, silent):
            stream.close()
    finally:
        channel.close()
        server.stop()
        store.close()


def test_the_flush_waits_until_every_push_of_a_change_is_answered(tmp_path, monkeypatch):
    monkeypatch.setattr(Hub, "flush_waits_for_pushes_at_most", 60.0)
    with after_a_change(tmp_path) as now:
        assert now.answering.nothing_within(1.0)  # five flush intervals: none flushed, silent's push is unanswered
        assert _acked(now.store, "answering") != now.version
        _ack(now.silent, now.pushed_to_silent)
        both = (now.store, "answering"), (now.store, "silent")
        wait_until(lambda: all(_acked(*each) == now.version for each in both), 10, what="the flush")


def test_a_stream_that_never_answers_holds_the_flush_back_only_so_long(tmp_path, monkeypatch):
    monkeypatch.setattr(Hub, "flush_waits_for_pushes_at_most", 0.5)
    with after_a_change(tmp_path) as now:
        wait_until(lambda: _acked(now.store, "answering") == now.version, 10, what="the flush, at its bound")
        assert _acked(now.store, "silent") != now.version


def test_a_stream_that_never_answers_holds_back_one_flush_not_every_later_one(tmp_path, monkeypatch):
    monkeypatch.setattr(Hub, "flush_waits_for_pushes_at_most", 0.5)
    with after_a_change(tmp_path) as now:
        wait_until(lambda: _acked(now.store, "answering") == now.version, 10, what="the flush, at its bound")
        monkeypatch.setattr(Hub, "flush_waits_for_pushes_at_most", 60.0)
        version = put(Registry(now.store), 8001, 8002, 8003)
        _ack(now.answering, now.answering.receive())
        wait_until(lambda: _acked(now.store, "answering") == version, 10, what="the next flush, not waiting for silent")
        _ack(now.silent, now.silent.receive())  # silent answers again: its pushes are waited for again
        version = put(Registry(now.store), 8001)
        _ack(now.answering, now.answering.receive())
        assert now.answering.nothing_within(1.0) and _acked(now.store, "answering") != version


def _held_until(store, node: str) -> float | None:
    return next((row.held_until for row in store.clients() if row.node_id == node), None)


def test_a_quiet_open_stream_stays_alive_in_the_view_and_a_closed_one_does_not(tmp_path, monkeypatch):
    # Rows say "alive until now + STREAM_ALIVE_FOR" and are noted again every third of it.
    for module in ("eds_server.xds.streams", "eds_server.grpc_xds.streams"):
        monkeypatch.setattr(f"{module}.STREAM_ALIVE_FOR", 1.5)
    with after_a_change(tmp_path) as now:
        now.silent.close()  # silent's push stays unanswered: only the periodic refresh notes its rows
        first = wait_until(lambda: _held_until(now.store, "answering"), 10, what="answering's row")
        wait_until(lambda: _held_until(now.store, "answering") > first + 1, 10, what="the row noted again")
        now.answering.close()
        wait_until(lambda: _held_until(now.store, "answering") <= time.time(), 10, what="closed: alive no longer")
