"""The discovery core: what every transport asks of discovery, and what it knows of each Envoy node.

A transport reads a request (xds/request.py for REST), hands it here, and
writes what comes back. The core owns the rest: the current version of each
service (one store read per name), the rendered answer (rendered once per
API, names and version, then served from memory), holding a request until
its services change (xds/holds.py), the per-node bookkeeping of what each
node was sent and what it holds (xds/clients.py, the clients view), and
waiting until every node holds a version (xds/propagation.py).
A gRPC stream asks for the same things one service at a time (`version`,
`resource`), with its own subscription kept in xds/streams.py.
It knows nothing of HTTP or gRPC.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

from ..store import Store
from .clients import Clients, ClientsLimits
from .holds import Holds
from .propagation import Propagations
from .render import assignment, combined_version, discovery_response, version_of
from .request import DiscoveryRequest


class Answer(NamedTuple):
    """What a request gets. Made on every poll: a NamedTuple, where a frozen dataclass would set each
    field through `object.__setattr__`."""

    status: int  # 200 or 304
    body: bytes
    version: str
    held: float = 0.0  # seconds the request was held before this answer


@lru_cache(maxsize=4096)
def empty_version(name: str) -> str:
    return version_of(name, None)


class DiscoveryCore:
    """Answers discovery requests for one worker, keeping the rendered bytes of the current answer to recent ones."""

    def __init__(
        self,
        store: Store,
        cache_size: int = 20000,
        on_held_count: Callable[[int], None] | None = None,
        subscribed_within: float = 10.0,
        clients_limits: ClientsLimits | None = None,
    ):
        self.store = store
        self.cache_size = cache_size
        # One answer per (API, names): the current one. An older version is never
        # served again (every answer is the current version), so keeping it would
        # only grow the worker's memory with every write.
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        # name -> (version, assignment): the latest rendering of each service a stream asked for,
        # so that a write pushed to thousands of streams is read and rendered once.
        self._resources: dict[str, tuple[str, dict]] = {}
        self.holds = Holds(store, self.current_version, *([on_held_count] if on_held_count else []))
        self.clients = Clients(store, self.current_version, clock=store.clock, limits=clients_limits or ClientsLimits())
        self.propagation = Propagations(self.clients, self.holds, self.current_version, subscribed_within)

    def current_version(self, names: tuple[str, ...]) -> str:
        return combined_version([self.store.version(n) or empty_version(n) for n in names])

    def version(self, name: str) -> str:
        """The current version of one service (the one REST polls see for it alone)."""
        return self.store.version(name) or empty_version(name)

    def resource(self, name: str) -> tuple[str, dict]:
        """The current (version, ClusterLoadAssignment) of one service; no service: one with no endpoints."""
        version = self.version(name)
        cached = self._resources.get(name)
        if cached is not None and cached[0] == version:
            return cached
        service = self.store.get(name)
        # As in `_render`: the version of what was read, even when a write landed in between.
        rendered = self._resources[name] = (version_of(name, service), assignment(name, service))
        while len(self._resources) > self.cache_size:
            self._resources.pop(next(iter(self._resources)))
        return rendered

    def poll(self, request: DiscoveryRequest, hold: float = 0.0) -> Answer:
        """A REST poll: answered (held up to `hold` seconds when nothing is new), and noted in the clients view
        both when it arrives (what the node holds) and when it is answered (what it was sent)."""
        arrival = self.clients.arrived(request, hold)
        answer = self._answer(request, hold, arrival.rejects)
        self.clients.answered(arrival, answer.version if answer.status == 200 else None)
        return answer

    def _answer(self, request: DiscoveryRequest, hold: float, rejects: str | None) -> Answer:
        """With `hold` > 0, a request with nothing new is held up to that many seconds.

        Held: a poll that holds the current version (it would get 304), and a
        poll from a node that rejected the current version (`rejects`: sent it,
        the node still reports what it had; answering at once would have it
        poll again at once, in a tight loop). Either is answered as soon as the
        version changes, else when the hold ends (304, or the current version
        re-sent to the node that rejected it).
        """
        version = self.current_version(request.names)
        held = 0.0
        if hold > 0 and request.version_info is not None and version in (request.version_info, rejects):
            started = time.monotonic()
            self.holds.wait(request.names, version, hold)
            held = time.monotonic() - started
            version = self.current_version(request.names)
        # Never 304 a poll without version_info: Envoy holds nothing yet (docs/PROTOCOL.md#what-envoy-keeps).
        if request.version_info is not None and request.version_info == version:
            return Answer(304, b"", version, held)
        key = (request.api, request.names)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == version:
                self._cache.move_to_end(key)
                return Answer(200, cached[1], version, held)
        return self._render(request)._replace(held=held)

    def _render(self, request: DiscoveryRequest) -> Answer:
        services = [(name, self.store.get(name)) for name in request.names]
        # The version is taken from the services actually read, not the one
        # compared above, so the cached bytes always match their key even
        # when a write lands in between.
        version = combined_version([version_of(name, service) for name, service in services])
        body = discovery_response(request.api, [assignment(name, service) for name, service in services], version)
        with self._lock:
            self._cache[(request.api, request.names)] = (version, body)
            self._cache.move_to_end((request.api, request.names))
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return Answer(200, body, version)
