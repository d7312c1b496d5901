"""The xDS protocol over gRPC, move by move, against a real `python -m eds_server --grpc-port`.

A grpcio client plays Envoy's part (scripts/xds_client.py); each
expectation is what Envoy's "xDS REST and gRPC protocol" document says
(docs/PROTOCOL.md, section gRPC, cites each), not what the code happens to do.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
import requests

from bench.simulated_envoys import Fleet
from scripts.processes import wait_until
from scripts.xds_client import CLA, NODE, XdsStream, assignments, ports

SOTW_METHODS = ["StreamEndpoints", "StreamAggregatedResources"]
DELTA_METHODS = ["DeltaEndpoints", "DeltaAggregatedResources"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from scripts.processes import EdsServer

    tmp = tmp_path_factory.mktemp("grpc-protocol")
    server = EdsServer(tmp=tmp, store=f"sqlite:///{tmp}/registry.db", workers=1, grpc=True).start()
    yield server
    server.stop()


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield channel


@pytest.fixture
def streams(channel):
    opened: list[XdsStream] = []

    def open_stream(method: str) -> XdsStream:
        stream = XdsStream(channel, method)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


_names = iter(range(10**6))


@pytest.fixture
def name(request) -> str:
    """A service name of this test's own (the server is shared by the module)."""
    return f"svc-{request.node.name.split('[')[0][-40:]}-{next(_names)}".replace("_", "-")


def put(server, name: str, *ports_: int) -> str:
    response = requests.put(
        f"{server.url}/edsservice/{name}",
        json={"hosts": [{"ip_address": "127.0.0.1", "port": p} for p in ports_]},
        timeout=5,
    )
    assert response.ok, response.text
    return rest_version(server, name)


def rest_version(server, name: str) -> str:
    """The version a REST poll is answered with for `name` alone: the one gRPC must use too."""
    poll = {"node": NODE, "resource_names": [name], "type_url": CLA}
    return requests.post(f"{server.url}/v3/discovery:endpoints", json=poll, timeout=5).json()["version_info"]


def client_row(server, name: str) -> dict:
    rows = requests.get(f"{server.url}/clients", params={"service": name}, timeout=5).json()["clients"]
    return next((row for row in rows if row["transport"] == "grpc"), {})


def acked_first(stream: XdsStream, name: str):
    """Subscribe a state-of-the-world stream to `name`, ACK the first response; returns it."""
    stream.send(node=NODE, resource_names=[name])
    first = stream.receive()
    stream.send(version_info=first.version_info, response_nonce=first.nonce, resource_names=[name])
    return first


# -- state of the world -------------------------------------------------------
@pytest.mark.parametrize("method", SOTW_METHODS)
def test_nonces_acks_and_a_change_pushed(server, streams, name, method):
    version = put(server, name, 8001)
    stream = streams(method)
    first = acked_first(stream, name)
    assert first.type_url == CLA and first.nonce and first.version_info == version
    assert ports(assignments(first)[name]) == [8001]
    assert stream.nothing_within(0.5), "an ACK with nothing new is not answered"
    wait_until(lambda: client_row(server, name).get("version_held") == version, timeout=5, what="the ACK noted")

    changed = put(server, name, 8001, 8002)
    second = stream.receive()
    assert second.nonce != first.nonce and second.version_info == changed
    assert ports(assignments(second)[name]) == [8001, 8002]


@pytest.mark.parametrize("method", SOTW_METHODS)
def test_a_nack_is_not_answered_with_the_same_version_and_shows_in_clients(server, streams, name, method):
    accepted = put(server, name, 8001)
    stream = streams(method)
    acked_first(stream, name)
    rejected = put(server, name, 8002)
    second = stream.receive()
    stream.send(
        version_info=accepted, response_nonce=second.nonce, resource_names=[name], error="port 8002: not on my list"
    )
    assert stream.nothing_within(1.0), "a rejected version is never pushed again in a loop"

    def nacked():
        row = client_row(server, name)
        return row.get("rejected") and row

    row = wait_until(nacked, timeout=5, what="the NACK in /clients")
    assert (row["version_held"], row["sent_version"], row["rejected_version"]) == (accepted, rejected, rejected)
    assert (row["error"], row["stuck"], row["in_sync"]) == ("port 8002: not on my list", True, False)

    fixed = put(server, name, 8003)  # the next push is the next change
    third = stream.receive()
    assert third.version_info == fixed and ports(assignments(third)[name]) == [8003]


@pytest.mark.parametrize("method", SOTW_METHODS)
def test_changing_the_subscription_sends_only_the_new_name_even_unchanged(server, streams, name, method):
    other = f"{name}-other"
    put(server, name, 8001)
    other_version = put(server, other, 9001)
    stream = streams(method)
    stream.send(node=NODE, resource_names=[name])
    first = stream.receive()
    stream.send(version_info=first.version_info, response_nonce=first.nonce, resource_names=[name, other])
    second = stream.receive()
    # EDS responses may carry only what changed for this stream: the newly subscribed name.
    assert list(assignments(second)) == [other]
    assert ports(assignments(second)[other]) == [9001] and other_version

    stream.send(version_info=second.version_info, response_nonce=second.nonce, resource_names=[other])
    assert stream.nothing_within(0.5)
    put(server, name, 8009)  # no longer subscribed: nothing pushed
    assert stream.nothing_within(0.5)


@pytest.mark.parametrize("method", SOTW_METHODS + DELTA_METHODS)
def test_an_unregistered_name_gets_no_endpoints_then_the_real_assignment(server, streams, name, method):
    stream = streams(method)
    subscribe = {"resource_names_subscribe": [name]} if stream.delta else {"resource_names": [name]}
    stream.send(node=NODE, **subscribe)
    first = stream.receive()
    assert ports(assignments(first)[name]) == []
    ack = {"response_nonce": first.nonce} if stream.delta else {"response_nonce": first.nonce, "resource_names": [name]}
    stream.send(**ack)
    put(server, name, 8001)
    assert ports(assignments(stream.receive())[name]) == [8001]


@pytest.mark.parametrize("method", SOTW_METHODS + DELTA_METHODS)
def test_deleting_or_emptying_a_service_sends_an_assignment_with_no_endpoints(server, streams, name, method):
    put(server, name, 8001)
    stream = streams(method)
    subscribe = {"resource_names_subscribe": [name]} if stream.delta else {"resource_names": [name]}
    stream.send(node=NODE, **subscribe)
    assert ports(assignments(stream.receive())[name]) == [8001]
    put(server, name)
    emptied = stream.receive()
    assert ports(assignments(emptied)[name]) == [] and not getattr(emptied, "removed_resources", [])
    put(server, name, 8002)
    stream.receive()
    assert requests.delete(f"{server.url}/edsservice/{name}", timeout=5).status_code == 204
    deleted = stream.receive()
    assert ports(assignments(deleted)[name]) == [] and not getattr(deleted, "removed_resources", [])


# -- delta ----------------------------------------------------------------------
@pytest.mark.parametrize("method", DELTA_METHODS)
def test_delta_subscribe_unsubscribe_and_per_resource_versions(server, streams, name, method):
    other = f"{name}-other"
    version, other_version = put(server, name, 8001), put(server, other, 9001)
    stream = streams(method)
    stream.send(node=NODE, resource_names_subscribe=[name, other])
    first = stream.receive()
    assert {r.name: r.version for r in first.resources} == {name: version, other: other_version}
    stream.send(response_nonce=first.nonce)
    changed = put(server, name, 8002)
    second = stream.receive()
    assert [(r.name, r.version) for r in second.resources] == [(name, changed)]  # only what changed

    stream.send(response_nonce=second.nonce, resource_names_unsubscribe=[name])
    put(server, name, 8003)
    assert stream.nothing_within(0.5)
    stream.send(resource_names_subscribe=[name])  # subscribed again: sent again
    assert [r.name for r in stream.receive().resources] == [name]


@pytest.mark.parametrize("method", DELTA_METHODS)
def test_delta_reconnect_with_initial_resource_versions_sends_only_what_differs(server, streams, name, method):
    same, moved = f"{name}-same", f"{name}-moved"
    same_version, moved_version = put(server, same, 8001), put(server, moved, 9001)
    stream = streams(method)
    stream.send(
        node=NODE,
        resource_names_subscribe=[same, moved],
        initial_resource_versions={same: same_version, moved: "a-version-from-before"},
    )
    response = stream.receive()
    assert [(r.name, r.version) for r in response.resources] == [(moved, moved_version)]
    stream.send(response_nonce=response.nonce)
    assert stream.nothing_within(0.5)


@pytest.mark.parametrize("method", DELTA_METHODS)
def test_a_delta_nack_is_recorded_and_not_resent(server, streams, name, method):
    put(server, name, 8001)
    stream = streams(method)
    stream.send(node=NODE, resource_names_subscribe=[name])
    first = stream.receive()
    stream.send(response_nonce=first.nonce, error="weight 0 is not allowed")
    assert stream.nothing_within(1.0)
    row = wait_until(lambda: client_row(server, name).get("rejected") and client_row(server, name), 5, what="NACK")
    assert row["error"] == "weight 0 is not allowed" and row["mode"].endswith("delta")


# -- bad input: a clear status for that stream, no harm to others -----------------
def test_an_unknown_type_url_on_the_eds_service_ends_that_stream_only(server, streams, name):
    healthy = streams("StreamEndpoints")
    healthy.send(node=NODE, resource_names=[name])
    healthy.receive()
    bad = streams("StreamEndpoints")
    bad.send(node=NODE, resource_names=["x"], type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster")
    ended = bad.ended()
    assert ended.code == grpc.StatusCode.INVALID_ARGUMENT and "serves only" in ended.details
    put(server, name, 8001)
    assert ports(assignments(healthy.receive())[name]) == [8001]


@pytest.mark.parametrize("method", ["StreamAggregatedResources", "DeltaAggregatedResources"])
def test_ads_answers_another_type_as_one_it_has_none_of(streams, method):
    stream = streams(method)
    clusters = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    if stream.delta:
        stream.send(node=NODE, type_url=clusters, resource_names_subscribe=["some-cluster"])
        response = stream.receive()
        assert (response.type_url, list(response.resources)) == (clusters, [])
        assert list(response.removed_resources) == ["some-cluster"]  # delta's "does not exist"
    else:
        stream.send(node=NODE, type_url=clusters)
        response = stream.receive()
        assert (response.type_url, list(response.resources)) == (clusters, [])
        stream.send(type_url=clusters, response_nonce=response.nonce)  # its ACK: not answered
        assert stream.nothing_within(0.5)


@pytest.mark.parametrize("bad_name", ["has space", "", "x" * 129, "slash/name"])
def test_a_name_that_is_not_a_service_name_ends_that_stream_with_the_reason(streams, bad_name):
    stream = streams("StreamEndpoints")
    stream.send(node=NODE, resource_names=["fine", bad_name])
    ended = stream.ended()
    assert ended.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "resource_names[1]" in ended.details and "is not a service name" in ended.details


def test_ten_thousand_names_on_one_stream_are_answered(streams):
    names = [f"many-{i}" for i in range(10_000)]
    stream = streams("DeltaEndpoints")
    stream.send(node=NODE, resource_names_subscribe=names)
    response = stream.receive(timeout=60)
    assert len(response.resources) == 10_000
    too_many = streams("DeltaEndpoints")
    too_many.send(node=NODE, resource_names_subscribe=[*names, "one-more"])
    ended = too_many.ended(timeout=60)
    assert ended.code == grpc.StatusCode.INVALID_ARGUMENT and "at most 10000" in ended.details


def test_garbage_on_a_stream_gets_a_status_and_the_server_serves_on(server, channel, streams, name):
    garbage = channel.stream_stream(
        "/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    with pytest.raises(grpc.RpcError) as failed:
        list(garbage(iter([b"\xff\xff\xff\xff not a protobuf"]), timeout=10))
    assert failed.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    stream = streams("StreamEndpoints")
    stream.send(node=NODE, resource_names=[name])
    assert name in assignments(stream.receive())


def test_a_stream_that_never_reads_does_not_hold_up_the_others(server, channel, streams, name):
    # A subscriber to a big assignment that never reads its responses.
    sluggish = XdsStream(channel, "StreamEndpoints", read=False)
    sluggish.send(node=NODE, resource_names=[name])
    healthy = streams("StreamEndpoints")
    healthy.send(node=NODE, resource_names=[name])
    healthy.receive()
    for round_ in range(5):
        big = [8000 + i for i in range(round_, 2000 + round_)]
        put(server, name, *big)
        assert len(ports(assignments(healthy.receive())[name])) == 2000
    sluggish.close()


def test_a_name_both_subscribed_and_unsubscribed_by_another_stream_never_cuts_this_one_off(server, streams, name):
    # The protocol gives no meaning to a name in both lists; whatever this server makes of it
    # (the name stays subscribed), no other stream may lose its pushes for it.
    put(server, name, 8001)
    healthy = streams("DeltaAggregatedResources")
    healthy.send(node=NODE, resource_names_subscribe=[name])
    healthy.send(response_nonce=healthy.receive().nonce)
    odd = streams("DeltaAggregatedResources")
    odd.send(node=NODE, resource_names_subscribe=[name])
    odd.send(response_nonce=odd.receive().nonce, resource_names_subscribe=[name], resource_names_unsubscribe=[name])
    assert ports(assignments(odd.receive())[name]) == [8001]  # subscribed still, so sent again
    odd.close()
    wait_until(lambda: subscriptions(server, name) == 1.0, 10, what="the odd stream gone from the gauge")
    put(server, name, 8002)
    assert ports(assignments(healthy.receive())[name]) == [8002]


def subscriptions(server, name: str) -> float | None:
    """eds_grpc_subscriptions of `name` on delta ADS streams, as /metrics shows it; None without a series."""
    line = f'eds_grpc_subscriptions{{mode="ads-delta",service="{name}"}} '
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    return next((float(row[len(line) :]) for row in text.splitlines() if row.startswith(line)), None)


def test_names_no_stream_watches_any_more_leave_the_subscriptions_gauge(server, streams, name):
    names = [f"{name}-{i}" for i in range(50)]
    stream = streams("DeltaAggregatedResources")
    stream.send(node=NODE, resource_names_subscribe=names)
    stream.send(response_nonce=stream.receive().nonce)
    wait_until(lambda: subscriptions(server, names[-1]) == 1.0, 10, what="the series of a subscribed name")
    stream.send(resource_names_unsubscribe=names)
    wait_until(lambda: subscriptions(server, names[-1]) is None, 10, what="the series gone")


def test_each_answer_for_another_type_has_a_nonce_of_its_own(streams):
    stream = streams("StreamAggregatedResources")
    clusters = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    nonces = []
    for round_ in range(4):
        stream.send(node=NODE, type_url=clusters, resource_names=[f"cluster-{round_}"])
        nonces.append(stream.receive().nonce)
    assert len(set(nonces)) == 4, nonces


def test_more_resource_types_than_envoy_has_end_that_stream(streams):
    stream = streams("DeltaAggregatedResources")
    for index in range(16):
        stream.send(node=NODE, type_url=f"type.googleapis.com/made.up.Type{index}", resource_names_subscribe=["x"])
        assert list(stream.receive().removed_resources) == ["x"]
    stream.send(type_url="type.googleapis.com/made.up.Type16", resource_names_subscribe=["x"])
    ended = stream.ended()
    assert ended.code == grpc.StatusCode.INVALID_ARGUMENT and "more than 16 resource types" in ended.details


def test_a_long_type_url_on_eds_is_refused_naming_its_start(streams):
    stream = streams("StreamEndpoints")
    stream.send(node=NODE, resource_names=["x"], type_url="type.googleapis.com/" + "x" * 50_000)
    ended = stream.ended()
    assert ended.code == grpc.StatusCode.INVALID_ARGUMENT and "serves only" in ended.details
    assert len(ended.details) < 500


def test_what_a_stream_says_of_its_node_and_its_nack_is_kept_bounded(server, streams, name):
    put(server, name, 8001)
    stream = streams("DeltaEndpoints")
    node = {"id": "n" * 100_000, "cluster": "c" * 100_000, "user_agent_version": "v" * 100_000}
    stream.send(node=node, resource_names_subscribe=[name])
    stream.send(response_nonce=stream.receive().nonce, error="e" * 100_000)
    row = wait_until(lambda: client_row(server, name).get("rejected") and client_row(server, name), 10, what="NACK")
    assert len(row["node_id"]) == 512 and len(row["cluster"]) == 256 and len(row["error"]) == 1024
    assert row["node_id"].startswith("nnnn") and "100000 chars" in row["node_id"]


# -- one core for both transports ------------------------------------------------
def test_a_ttl_expiry_by_the_rest_workers_sweeper_reaches_the_stream(server, streams, name):
    host = {"ip_address": "127.0.0.1", "port": 8001, "ttl": 1}
    assert requests.post(f"{server.url}/edsservice/{name}/hosts", json=host, timeout=5).status_code == 201
    stream = streams("DeltaAggregatedResources")
    stream.send(node=NODE, resource_names_subscribe=[name])
    assert ports(assignments(stream.receive())[name]) == [8001]
    expired = stream.receive(timeout=10)  # nobody writes: the sweeper removes the host
    assert ports(assignments(expired)[name]) == []


def test_a_write_through_another_replica_on_the_same_store_reaches_the_stream(server, streams, name, tmp_path):
    from scripts.processes import EdsServer

    replica = EdsServer(tmp=tmp_path, store=server.store, workers=1).start()  # REST only
    try:
        stream = streams("StreamEndpoints")
        stream.send(node=NODE, resource_names=[name])
        stream.receive()
        version = put(replica, name, 8007)
        pushed = stream.receive()
        assert pushed.version_info == version and ports(assignments(pushed)[name]) == [8007]
    finally:
        replica.stop()


def test_on_redis_a_write_through_another_replica_reaches_the_stream(redis_url, tmp_path):
    from scripts.processes import EdsServer

    streaming = EdsServer(tmp=tmp_path, store=redis_url, workers=1, grpc=True).start()
    writing = EdsServer(tmp=tmp_path, store=redis_url, workers=1).start()
    try:
        with grpc.insecure_channel(streaming.grpc_target) as channel:
            stream = XdsStream(channel, "DeltaEndpoints")
            stream.send(node=NODE, resource_names_subscribe=["on-redis"])
            assert ports(assignments(stream.receive())["on-redis"]) == []
            put(writing, "on-redis", 8001)
            assert ports(assignments(stream.receive())["on-redis"]) == [8001]
            stream.close()
    finally:
        writing.stop()
        streaming.stop()


# -- the benchmark's simulated Envoys ---------------------------------------------
def test_the_benchmarks_simulated_envoys_ack_every_push_as_the_server_sees_it(server, name):
    """`make bench` times a fan-out with simulated Envoys on h2 (bench/simulated_envoys.py), not grpcio:
    they must be what the server counts as Envoys that got each push and ACKed it."""
    first, changed = put(server, name, 8001), None
    fleet = Fleet(30, name, f"fleet-{name}")

    async def run() -> None:
        nonlocal changed
        host, port = server.grpc_target.rsplit(":", 1)
        try:
            await fleet.open(host, int(port), connections=3, wave=10, wave_seconds=0.05)
            await fleet.every_stream_answered(10)
            changed = await asyncio.to_thread(put, server, name, 8001, 8002)
            await fleet.arrivals.everywhere(changed, 10)
            await asyncio.to_thread(wait_until, acked_by_all, 10, what="every simulated Envoy's ACK in /clients")
        finally:
            fleet.close()

    def acked_by_all() -> bool:
        rows = requests.get(f"{server.url}/clients", params={"service": name}, timeout=5).json()["clients"]
        held = {row["node_id"]: row["version_held"] for row in rows if row["transport"] == "grpc"}
        return held == {f"fleet-{name}-{i}": changed for i in range(30)}

    asyncio.run(run())
    assert first != changed
    assert (len(fleet.arrivals.at[first]), len(fleet.arrivals.at[changed]), fleet.reopened) == (30, 30, 0)
