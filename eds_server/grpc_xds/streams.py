"""The gRPC xDS streams of one process: each reads requests and pushes what is due, on one asyncio loop.

A stream is two tasks: one reads requests (subscriptions, ACKs, NACKs) and
hands them to the core's bookkeeping (xds/streams.py); the other waits to
be woken (a request, or a change of a service it watches, from the
process's one `ChangeFeed`) and writes what is due. A stream that stops
reading only stalls its own writes (HTTP/2 flow control); a bad request
ends only its own stream, with a gRPC status that says what was wrong.

State of the world and delta differ only in how a request changes the
subscription and in the response's shape; both carry only the resources
that changed, each with its own per-service version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import grpc

from ..model import NAME_PATTERN
from ..store import StoreUnavailable
from ..telemetry import Metrics
from ..xds import DiscoveryCore
from ..xds.clients import FLUSH_WAITS_FOR_ANSWERS_AT_MOST
from ..xds.feed import ChangeFeed
from ..xds.streams import SOTW, STREAM_ALIVE_FOR, Subscription
from . import wire

log = logging.getLogger("eds_server.grpc")


# Resource types one ADS stream may ask for besides endpoints (Envoy asks for at most a handful:
# listeners, routes, clusters, secrets, runtime...): each is remembered for as long as the stream.
MAX_OTHER_TYPES = 16
# Names one stream reads and packs before the loop turns to the other streams.
NAMES_BETWEEN_TURNS = 200


class StreamError(Exception):
    """Ends one stream with this gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_names: int  # resource names one stream may subscribe to (the registry's max_services)


class Hub:
    """Every open stream of this process, by the service names they watch; woken by the feed."""

    # A change's pushes count as under way until their ACK or NACK is read, so the view it then
    # flushes has them; a stream that never answers holds a flush back this long, once: until it
    # answers again, its pushes are not waited for.
    flush_waits_for_pushes_at_most = FLUSH_WAITS_FOR_ANSWERS_AT_MOST

    def __init__(self, core: DiscoveryCore, metrics: Metrics, limits: Limits):
        self.core = core
        self.metrics = metrics
        self.limits = limits
        self.packer = wire.Packer(core.cache_size)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._by_name: dict[str, set[XdsStream]] = defaultdict(set)
        # name -> (version, assignment) as last read for the watched services: a change pushed to
        # thousands of streams is read once. Read on this loop only, so a later read is always newer.
        self._latest: dict[str, tuple[str, dict]] = {}
        self.streams: set[XdsStream] = set()
        self._dirty: set[XdsStream] = set()  # streams whose clients-view rows changed since the last `flush`
        self._pushing: set[XdsStream] = set()  # streams woken by a change, until it is answered or not due
        self._silent: set[XdsStream] = set()  # streams a flush waited for in vain, until they answer
        self._refreshed_at = time.monotonic()  # every open stream's rows last noted
        self.feed = ChangeFeed(core.store, self._changed_from_thread)
        self.stopping = False

    def start(self) -> Hub:
        self.loop = asyncio.get_running_loop()
        self.feed.start()
        return self

    def stop(self) -> None:
        """Every stream ends now (UNAVAILABLE: Envoy reconnects, to another server if it has one)."""
        self.stopping = True
        self.feed.stop()
        for stream in list(self.streams):
            stream.fail(StreamError(grpc.StatusCode.UNAVAILABLE, "eds-server is stopping"))

    def _changed_from_thread(self, names: set[str]) -> None:
        self.loop.call_soon_threadsafe(self._changed, names)

    def _changed(self, names: set[str]) -> None:
        for name in names:
            watchers = self._by_name.get(name)
            if not watchers:
                continue
            # Read again by the first stream woken, for all of them, between the other streams' turns:
            # the feed names every newly watched name once, and a stream may have just subscribed thousands.
            self._latest.pop(name, None)
            self._pushing |= watchers - self._silent
            for stream in watchers:
                stream.check(name)

    def current(self, name: str) -> tuple[str, dict]:
        """The (version, assignment) of a watched service: as read since its last change, or now."""
        latest = self._latest.get(name)
        if latest is None:
            latest = self._latest[name] = self.core.resource(name)
        return latest

    def joined(self, stream: XdsStream) -> None:
        self.streams.add(stream)
        self.metrics.grpc_stream_opened(stream.kind)
        log.info("stream open: node=%s mode=%s peer=%s", stream.subscription.node.id, stream.kind, stream.peer)

    def noted(self, stream: XdsStream) -> None:
        """The stream's bookkeeping changed: its rows go to the clients view at the next `flush`."""
        self._dirty.add(stream)

    def flush(self) -> None:
        """Every changed stream's rows into the clients view, and the metrics to their files (on the loop).

        Every open stream's rows go again once a third of STREAM_ALIVE_FOR has passed: a quiet stream
        is still a subscribed Envoy (what propagation waits count).
        """
        dirty, self._dirty = self._dirty, set()
        clients = self.core.clients
        now = time.monotonic()
        refresh = now - self._refreshed_at >= STREAM_ALIVE_FOR / 3
        if refresh:
            self._refreshed_at = now
        for stream in self.streams if refresh else ():
            clients.note_stream(stream.subscription.rows(everything=True))
        for stream in dirty - self.streams if refresh else dirty:
            clients.note_stream(stream.subscription.rows())
        self.metrics.flush()

    def settled(self, stream: XdsStream) -> None:
        """`stream` had nothing to push, or its push was answered (ACK or NACK)."""
        self._pushing.discard(stream)

    def answered(self, stream: XdsStream) -> None:
        self._silent.discard(stream)
        self.settled(stream)

    async def flush_every(self, seconds: float) -> None:
        """`flush`, then the clients view to the store (in a thread: a store write must not stall the loop)."""
        while True:
            await asyncio.sleep(seconds)
            waited_until = time.monotonic() + self.flush_waits_for_pushes_at_most
            while self._pushing and time.monotonic() < waited_until:
                await asyncio.sleep(0.05)
            self._silent |= self._pushing
            self._pushing.clear()
            self.flush()
            try:
                await asyncio.to_thread(self.core.clients.flush)
            except Exception as error:  # kept for the next flush
                log.warning("clients view: flush failed: %s", error)

    def left(self, stream: XdsStream) -> None:
        stream.subscription.closed_at = stream.subscription.clock()
        self.noted(stream)
        self.streams.discard(stream)
        self._pushing.discard(stream)
        self._silent.discard(stream)
        log.info("stream closed: node=%s mode=%s peer=%s", stream.subscription.node.id, stream.kind, stream.peer)
        self.watch(stream, remove=stream.subscription.names)
        self.metrics.grpc_stream_closed(stream.kind)

    def watch(self, stream: XdsStream, add=(), remove=()) -> None:
        """Before a stream reads the versions of `add`, so a write landing meanwhile wakes it."""
        for name in add:
            self._by_name[name].add(stream)
        for name in remove:
            watchers = self._by_name.get(name)
            if watchers is not None:
                watchers.discard(stream)
                if not watchers:
                    del self._by_name[name]
                    self._latest.pop(name, None)
        self.feed.watch(add)
        self.feed.unwatch(remove)
        self.metrics.grpc_subscribed(stream.kind, add, remove)


class XdsStream:
    def __init__(self, hub: Hub, context: grpc.aio.ServicerContext, mode: str, service: str):
        self.hub = hub
        self.context = context
        self.mode = mode
        self.service = service  # "eds": only ClusterLoadAssignment; "ads": other types get "none here"
        self.subscription: Subscription | None = None
        self._wake = asyncio.Event()
        self._to_check: set[str] = set()
        # Answers for other resource types (ADS), written before pushes; a type's newer answer replaces
        # one not yet written, so a client that does not read holds at most one per type.
        self._outbox: dict[str, object] = {}
        self._other_types: dict[str, tuple[str, int]] = {}  # type_url -> (nonce, hash of the names answered)
        self._answers = 0  # answers for other types so far: their nonces' numbers
        self._failure: StreamError | None = None
        self._ended = False
        self._node = None  # from the stream's first request: the protocol sends it only there for sure

    @property
    def kind(self) -> str:
        return f"{self.service}-{self.mode}"

    @property
    def peer(self) -> str:
        return self.context.peer() or "-"

    # -- waking --------------------------------------------------------------
    def check(self, name: str) -> None:
        self._to_check.add(name)
        self._wake.set()

    def fail(self, error: StreamError) -> None:
        self._failure = error
        self._wake.set()

    # -- the stream's life ---------------------------------------------------
    async def run(self):
        reader = asyncio.create_task(self._read())
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._failure is not None:
                    if self._failure.code != grpc.StatusCode.UNAVAILABLE:
                        log.warning("stream refused: peer=%s %s: %s", self.peer, self._failure.code.name, self._failure)
                    await self.context.abort(self._failure.code, self._failure.message)
                if self._ended:
                    return
                try:
                    await self._write_due()
                except StreamError as error:
                    self.fail(error)
        finally:
            reader.cancel()
            if self.subscription is not None:
                self.hub.left(self)

    async def _read(self) -> None:
        try:
            while True:
                request = await self.context.read()
                if request is grpc.aio.EOF:
                    self._ended = True
                    self._wake.set()
                    return
                self._handle(request)
                if self._to_check or self._outbox:  # most requests are ACKs, which make nothing due
                    self._wake.set()
        except StreamError as error:
            self.fail(error)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a request grpc could not read, or the stream went away
            self.fail(StreamError(grpc.StatusCode.INVALID_ARGUMENT, f"cannot read the request: {error}"))

    # -- requests ------------------------------------------------------------
    def _handle(self, request) -> None:
        type_url = request.type_url or (wire.ASSIGNMENT_TYPE if self.service == "eds" else "")
        if self._node is None:
            self._node = wire.node_of(request)
        first = self.subscription is None
        if first and type_url == wire.ASSIGNMENT_TYPE:
            self.subscription = Subscription(self.mode, self.service, self._node, time.time)
            self.hub.joined(self)
        if type_url != wire.ASSIGNMENT_TYPE:
            self._other_type(type_url, request)
            return
        subscription = self.subscription
        message = wire.error_message(request)
        if self.mode == SOTW:
            names = set(request.resource_names)
            self._verdict(subscription.answered(request.response_nonce, message))
            # Most requests are ACKs of an unchanged subscription: nothing more to do.
            if names != subscription.names and not subscription.stale(request.response_nonce):
                self._checked(request.resource_names, "resource_names")
                before = set(subscription.names)
                self.hub.watch(self, add=names - before, remove=before - names)
                subscription.subscribe_exactly(names)
                self._to_check |= names - before
        else:
            subscribe = self._checked(request.resource_names_subscribe, "resource_names_subscribe")
            unsubscribe = self._checked(request.resource_names_unsubscribe, "resource_names_unsubscribe")
            self._verdict(subscription.answered(request.response_nonce, message))
            # The protocol reads initial_resource_versions on a stream's first request (of the type) only.
            held = dict(request.initial_resource_versions) if first else {}
            before = set(subscription.names)
            subscription.unsubscribe(unsubscribe)
            self._to_check |= subscription.subscribe(subscribe, held)
            # What the stream watches follows what it ends up subscribed to (a name in both lists
            # stays subscribed): the feed counts each name's watchers, for every stream at once.
            self.hub.watch(self, add=subscription.names - before, remove=before - subscription.names)
            if len(subscription.names) > self.hub.limits.max_names:
                raise StreamError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{len(subscription.names)} resource names subscribed: at most {self.hub.limits.max_names}",
                )
        self.hub.noted(self)

    def _counted(self, names, field: str):
        if len(names) > self.hub.limits.max_names:
            raise StreamError(
                grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {len(names)} names, at most {self.hub.limits.max_names}"
            )
        return names

    def _checked(self, names, field: str) -> set[str]:
        for index, name in enumerate(self._counted(names, field)):
            if not NAME_PATTERN.fullmatch(name):
                raise StreamError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{field}[{index}]: {name[:200]!r} is not a service name (1-128 characters of A-Z a-z 0-9 . _ -)",
                )
        return set(names)

    def _verdict(self, verdict) -> None:
        if verdict is None:
            return
        self.hub.answered(self)
        metrics, kind = self.hub.metrics, self.kind
        if verdict.accepted:
            metrics.grpc_acked(kind)
            return
        metrics.grpc_nacked(kind)
        node = self.subscription.node
        log.warning(
            "NACK from node %s (%s) of %s: %s",
            node.id,
            kind,
            ", ".join(f"{name}@{version}" for name, version in sorted(verdict.resources.items())),
            verdict.message,
        )

    def _other_type(self, type_url: str, request) -> None:
        """A type this server does not serve: on EDS a protocol error, on ADS "there is none of it"."""
        if self.service == "eds":
            raise StreamError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"type_url {type_url[:200]!r}: EndpointDiscoveryService serves only {wire.ASSIGNMENT_TYPE}",
            )
        if not type_url:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "type_url: required on an aggregated (ADS) stream")
        if type_url not in self._other_types and len(self._other_types) >= MAX_OTHER_TYPES:
            raise StreamError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"type_url {type_url[:200]!r}: more than {MAX_OTHER_TYPES} resource types asked for on one stream",
            )
        answered_nonce, answered = self._other_types.get(type_url, ("", 0))
        if self.mode == SOTW:
            names = frozenset(self._counted(request.resource_names, "resource_names"))
            if request.response_nonce == answered_nonce and hash(names) == answered and answered_nonce:
                return  # the ACK of our answer
            response = wire.DiscoveryResponse(type_url=type_url, version_info="", nonce=self._other_nonce(type_url))
        else:
            names = frozenset(self._counted(request.resource_names_subscribe, "resource_names_subscribe"))
            if request.response_nonce and not names:
                return
            response = wire.DeltaDiscoveryResponse(
                type_url=type_url, removed_resources=sorted(names - {"*"}), nonce=self._other_nonce(type_url)
            )
        self._other_types[type_url] = (response.nonce, hash(names))
        self._outbox[type_url] = response

    def _other_nonce(self, type_url: str) -> str:
        self._answers += 1
        return f"{type_url.rsplit('.', 1)[-1][:100]}-{self._answers}"

    # -- pushes --------------------------------------------------------------
    async def _write_due(self) -> None:
        while self._outbox:
            await self.context.write(self._outbox.pop(next(iter(self._outbox))))
        subscription = self.subscription
        if subscription is None or not self._to_check:
            self.hub.settled(self)
            return
        started = time.perf_counter()
        hub = self.hub
        names, self._to_check = self._to_check & subscription.names, set()
        try:
            rendered = await self._unsent(names)
        except StoreUnavailable as error:  # Envoy keeps its endpoints, and reconnects
            raise StreamError(grpc.StatusCode.UNAVAILABLE, f"the registry store is unavailable: {error}") from None
        if not rendered:
            self.hub.settled(self)
            return
        nonce = subscription.pushed({name: version for name, (version, _) in rendered.items()})
        if self.mode == SOTW:
            response = wire.DiscoveryResponse(
                version_info=subscription.version_info(),
                resources=[packed for _, packed in rendered.values()],
                type_url=wire.ASSIGNMENT_TYPE,
                nonce=nonce,
            )
        else:
            response = wire.DeltaDiscoveryResponse(
                system_version_info=subscription.version_info(),
                resources=[
                    wire.Resource(name=name, version=version, resource=packed)
                    for name, (version, packed) in rendered.items()
                ],
                type_url=wire.ASSIGNMENT_TYPE,
                nonce=nonce,
            )
        hub.noted(self)
        await self.context.write(response)
        self.hub.metrics.grpc_pushed(self.kind, len(rendered), time.perf_counter() - started)

    async def _unsent(self, names: set[str]) -> dict[str, tuple[str, object]]:
        """name -> (version, packed assignment) of those of `names` whose current version this stream
        was not sent. Reading and packing thousands of names newly subscribed takes a while: every
        NAMES_BETWEEN_TURNS names the loop serves the other streams (a write's pushes among them)."""
        hub, subscription = self.hub, self.subscription
        unsent = {}
        for index, name in enumerate(sorted(names)):
            if index and index % NAMES_BETWEEN_TURNS == 0:
                await asyncio.sleep(0)
            version, body = hub.current(name)
            if subscription.sent.get(name) != version:
                unsent[name] = (version, hub.packer.packed(name, version, body))
        # Names unsubscribed meanwhile are not sent; names subscribed meanwhile are due next.
        return {name: due for name, due in unsent.items() if name in subscription.names}
