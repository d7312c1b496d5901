"""Simulated Envoys for the fan-out benchmark: thousands of ADS streams over a few HTTP/2 connections.

Each stream is one Envoy: its own node id, subscribed to one service over
ADS state of the world, ACKing every response, and opened again when the
server ends it. They speak HTTP/2 through the h2 library on asyncio rather
than through grpcio: a real fleet runs on other machines, and here the
simulated Envoys share the server's two cores. On grpc.aio they cost as much
CPU as the server they measured, so a fan-out timed the two together; on h2
about half as much (docs/PERFORMANCE.md, "Fan-outs to 10,000 Envoys").
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from contextlib import suppress

import h2.config
import h2.connection
import h2.events
import h2.settings
from envoy.service.discovery.v3 import discovery_pb2

CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ADS_PATH = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
REOPEN_AFTER = 0.1  # seconds an ended stream waits before it is opened again
# Our receive windows, opened wide once: the simulated Envoys never have to hand back window as they read.
RECEIVE_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535


class Arrivals:
    """When each version reached the simulated Envoys, noted as it arrives: looking over 10,000 streams'
    versions while they arrive would itself take the clients' CPU from reading them."""

    def __init__(self, streams: int):
        self.streams = streams
        self.at: dict[str, list[float]] = defaultdict(list)
        self._everywhere: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def note(self, version: str, now: float) -> None:
        arrived = self.at[version]
        arrived.append(now)
        if len(arrived) == self.streams:
            self._everywhere[version].set()

    async def everywhere(self, version: str, timeout: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._everywhere[version].wait(), timeout)


def _grpc_message(request: discovery_pb2.DiscoveryRequest) -> bytes:
    """gRPC's framing of one message: not compressed, its length, its bytes."""
    body = request.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection carrying many simulated Envoys' streams."""

    def __init__(self, fleet: Fleet, authority: str):
        self.fleet = fleet
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", ADS_PATH),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        self.node_of: dict[int, str] = {}  # stream id -> node id
        self.unread: dict[int, bytes] = {}  # stream id -> the start of a message not yet whole
        self.unsent: list[tuple[int, bytes]] = []  # ACKs waiting for the server's flow-control window
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(RECEIVE_WINDOW - DEFAULT_WINDOW)
        self._send_pending()

    def open_stream(self, node: str) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        stream = self.h2.get_next_available_stream_id()
        self.node_of[stream] = node
        self.h2.send_headers(stream, self.headers)
        first = discovery_pb2.DiscoveryRequest(node={"id": node}, resource_names=[self.fleet.name], type_url=CLA)
        self._send(stream, _grpc_message(first))
        self._send_pending()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self._read(event.stream_id, event.data, now)
            elif isinstance(event, h2.events.WindowUpdated):
                unsent, self.unsent = self.unsent, []
                for stream, body in unsent:
                    self._send(stream, body)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                self._ended(event.stream_id)
        self._send_pending()

    def _read(self, stream: int, data: bytes, now: float) -> None:
        pending = self.unread.pop(stream, b"") + data
        while len(pending) >= 5:
            size = int.from_bytes(pending[1:5], "big")
            if len(pending) < 5 + size:
                break
            response = discovery_pb2.DiscoveryResponse.FromString(pending[5 : 5 + size])
            pending = pending[5 + size :]
            self.fleet.answered(self.node_of[stream], response.version_info, now)
            self._send(stream, self.fleet.ack(response.version_info, response.nonce))
        if pending:
            self.unread[stream] = pending

    def _send(self, stream: int, body: bytes) -> None:
        if stream not in self.node_of:
            return
        if self.unsent or self.h2.local_flow_control_window(stream) < len(body):
            self.unsent.append((stream, body))
        else:
            self.h2.send_data(stream, body)

    def _ended(self, stream: int) -> None:
        node = self.node_of.pop(stream, None)
        self.unread.pop(stream, None)
        if node is not None:
            self.fleet.reopened += 1
            asyncio.get_running_loop().call_later(REOPEN_AFTER, self.open_stream, node)

    def _send_pending(self) -> None:
        if out := self.h2.data_to_send():
            self.transport.write(out)

    def close(self) -> None:
        self.node_of.clear()
        if self.transport is not None:
            self.transport.close()


class Fleet:
    """`streams` simulated Envoys (node ids `node_prefix`-0, -1, ...) subscribed to `name`, over `connections`
    HTTP/2 connections to an ADS server (no TLS)."""

    def __init__(self, streams: int, name: str, node_prefix: str):
        self.streams, self.name, self.node_prefix = streams, name, node_prefix
        self.arrivals = Arrivals(streams)
        self.reopened = 0  # streams that ended and were opened again
        self._connections: list[_Connection] = []
        self._first: set[str] = set()  # the nodes that had a first response
        self._all_answered = asyncio.Event()
        self._acks: dict[tuple[str, str], bytes] = {}

    async def open(self, host: str, port: int, connections: int, wave: int, wave_seconds: float) -> None:
        """Connect, then open the streams `wave` at a time, `wave_seconds` apart (a fleet coming up)."""
        loop = asyncio.get_running_loop()
        for _ in range(connections):
            _, connection = await loop.create_connection(lambda: _Connection(self, f"{host}:{port}"), host, port)
            self._connections.append(connection)
        for index in range(self.streams):
            self._connections[index % connections].open_stream(f"{self.node_prefix}-{index}")
            if index % wave == wave - 1:
                await asyncio.sleep(wave_seconds)

    async def every_stream_answered(self, timeout: float) -> None:
        await asyncio.wait_for(self._all_answered.wait(), timeout)

    def answered(self, node: str, version: str, now: float) -> None:
        self.arrivals.note(version, now)
        if not self._all_answered.is_set():
            self._first.add(node)
            if len(self._first) == self.streams:
                self._all_answered.set()

    def ack(self, version: str, nonce: str) -> bytes:
        """The ACK of one response. Streams opened alike number their nonces alike: one ACK serves many."""
        key = (version, nonce)
        if (body := self._acks.get(key)) is None:
            body = self._acks[key] = _grpc_message(
                discovery_pb2.DiscoveryRequest(
                    version_info=version, response_nonce=nonce, resource_names=[self.name], type_url=CLA
                )
            )
        return body

    def close(self) -> None:
        for connection in self._connections:
            connection.close()
