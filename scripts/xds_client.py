"""A hand-driven xDS client on grpcio: one bidirectional stream, requests sent one by one, responses read in time.

What Envoy does on a stream, step by step, so a test can play each move
(subscribe, ACK, NACK, reconnect with initial_resource_versions) and see the
server's exact answer.
"""

from __future__ import annotations

import queue
import threading

import grpc
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2_grpc
from google.rpc import status_pb2

CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
NODE = {"id": "test-node", "cluster": "test-cluster"}
_END = object()


class StreamEnded(Exception):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class XdsStream:
    """`method`: StreamEndpoints, DeltaEndpoints, StreamAggregatedResources or DeltaAggregatedResources."""

    def __init__(self, channel: grpc.Channel, method: str, read: bool = True):
        """`read` False: a client that never reads its responses."""
        stub = (
            eds_pb2_grpc.EndpointDiscoveryServiceStub(channel)
            if "Endpoints" in method
            else ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        )
        self.delta = method.startswith("Delta")
        self._requests: queue.Queue = queue.Queue()
        self._responses: queue.Queue = queue.Queue()
        self._call = getattr(stub, method)(iter(self._requests.get, _END))
        if read:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self._call:
                self._responses.put(response)
        except grpc.RpcError as error:
            self._responses.put(StreamEnded(error.code(), error.details()))
        else:
            self._responses.put(StreamEnded(grpc.StatusCode.OK, ""))
        finally:
            # grpcio's thread that sends our requests waits on this queue for good, stream ended or not.
            self._requests.put(_END)

    def send(self, **fields) -> None:
        fields.setdefault("type_url", CLA)
        error = fields.pop("error", None)
        if error is not None:
            fields["error_detail"] = status_pb2.Status(code=3, message=error)
        request = discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        self._requests.put(request(**fields))

    def receive(self, timeout: float = 10):
        """The next response; StreamEnded raised when the stream ended instead; queue.Empty after `timeout`."""
        item = self._responses.get(timeout=timeout)
        if isinstance(item, StreamEnded):
            raise item
        return item

    def nothing_within(self, seconds: float) -> bool:
        try:
            item = self._responses.get(timeout=seconds)
        except queue.Empty:
            return True
        self._responses.put(item)
        return False

    def ended(self, timeout: float = 10) -> StreamEnded:
        """The status the stream ended with (responses before it are skipped)."""
        while True:
            try:
                self.receive(timeout)
            except StreamEnded as ended:
                return ended

    def close(self) -> None:
        self._requests.put(_END)
        self._call.cancel()


def assignments(response) -> dict[str, endpoint_pb2.ClusterLoadAssignment]:
    """name -> ClusterLoadAssignment of a DiscoveryResponse or DeltaDiscoveryResponse."""
    unpacked = {}
    for item in response.resources:
        packed = item.resource if hasattr(item, "resource") and item.HasField("resource") else item
        assignment = endpoint_pb2.ClusterLoadAssignment()
        assert packed.Unpack(assignment), packed.type_url
        unpacked[assignment.cluster_name] = assignment
    return unpacked


def ports(assignment: endpoint_pb2.ClusterLoadAssignment) -> list[int]:
    return sorted(
        lb.endpoint.address.socket_address.port_value for group in assignment.endpoints for lb in group.lb_endpoints
    )


def connections(target: str, count: int) -> list[grpc.aio.Channel]:
    """`count` grpc.aio channels to `target`, each its own HTTP/2 connection, as that many Envoys (or
    proxies in front of them) would open. Channels alike otherwise share one connection: grpc pools
    subchannels process-wide."""
    return [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(count)]
