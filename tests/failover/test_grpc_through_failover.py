"""gRPC streams ride a Sentinel failover: a stream open on a `redis+sentinel://` server stays open
while the primary is killed and replaced, and receives a change written after the failover (the
gRPC process's change feed follows the new primary)."""

from __future__ import annotations

import grpc
import requests

from scripts.processes import wait_until
from scripts.xds_client import CLA, NODE, XdsStream, assignments, ports


def _registered(server, port: int) -> bool:
    """Adds 10.0.0.1:port to web; False while the store refuses writes (503 during a failover)."""
    host = {"ip_address": "10.0.0.1", "port": port}
    try:
        answer = requests.post(f"{server.url}/edsservice/web/hosts", json=host, timeout=10)
    except requests.RequestException:
        return False
    assert answer.status_code < 400 or answer.status_code == 503, answer.text
    return answer.ok


def test_an_open_ads_stream_gets_a_change_written_after_the_failover(sentinel_cluster, eds_server):
    cluster = sentinel_cluster()
    server = eds_server(store=cluster.url, workers=1, grpc=True)
    assert _registered(server, 8001)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stream = XdsStream(channel, "StreamAggregatedResources")
        stream.send(node=NODE, resource_names=["web"], type_url=CLA)
        first = stream.receive()
        assert ports(assignments(first)["web"]) == [8001]
        stream.send(version_info=first.version_info, response_nonce=first.nonce, resource_names=["web"])
        killed = cluster.kill_primary()
        wait_until(lambda: _registered(server, 8002), 30, 0.2, what="a write acknowledged after the failover")
        assert cluster.primary is not killed
        changed = stream.receive(30)  # the same stream: it was not ended meanwhile
        assert ports(assignments(changed)["web"]) == [8001, 8002]
        stream.close()
