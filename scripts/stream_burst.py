"""A fleet of Envoys reconnecting together (after a server restart, say): many ADS streams opened at once.

Each stream subscribes to one service and reads its first response; none is
retried, so every stream the server failed is counted. Run it in a process of
its own (grpc.aio binds itself to the first event loop of a process):

    python -m scripts.stream_burst TARGET SERVICE STREAMS CONNECTIONS

prints one JSON line: {"served": N, "failed": {"CANCELLED": N, ...}, "seconds": S}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from eds_server.serving.limits import raise_open_files_limit
from scripts import xds_client
from scripts.xds_client import CLA


async def burst(target: str, service: str, streams: int, connections: int, timeout: float) -> dict:
    channels = xds_client.connections(target, connections)
    stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel) for channel in channels]
    failed: Counter[str] = Counter()
    calls = []

    async def first_response(index: int) -> bool:
        call = stubs[index % connections].StreamAggregatedResources()
        calls.append(call)
        try:
            request = discovery_pb2.DiscoveryRequest(
                node={"id": f"fleet-{index}"}, resource_names=[service], type_url=CLA
            )
            await call.write(request)
            response = await call.read()
        except grpc.aio.AioRpcError as error:
            failed[error.code().name] += 1
            return False
        if response is grpc.aio.EOF:
            failed["EOF"] += 1
            return False
        return True

    started = time.monotonic()
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(first_response(i) for i in range(streams))), timeout)
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()
    return {"served": sum(answers), "failed": dict(failed), "seconds": round(time.monotonic() - started, 2)}


def open_at_once(target: str, service: str, streams: int, connections: int, timeout: float = 120) -> dict:
    raise_open_files_limit()
    return asyncio.run(burst(target, service, streams, connections, timeout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("service")
    parser.add_argument("streams", type=int)
    parser.add_argument("connections", type=int)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    print(json.dumps(open_at_once(args.target, args.service, args.streams, args.connections, args.timeout)))


if __name__ == "__main__":
    main()
