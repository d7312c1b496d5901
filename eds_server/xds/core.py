"""The discovery core: what every transport asks of discovery, and what it knows of each Envoy node.

A transport reads a request (xds/request.py for REST), hands it here, and
writes what comes back. The core owns the rest: the current version of each
service (one store read per name), the rendered answer (rendered once per
API, names and version, then served from memory), holding a request until
its services change (xds/holds.py), and the per-node bookkeeping of what
each node was sent and what it holds (xds/clients.py, the clients view).
It knows nothing of HTTP.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

from ..store import Store
from .clients import Clients
from .holds import Holds
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

    def __init__(self, store: Store, cache_size: int = 20000, on_held_count: Callable[[int], None] | None = None):
        self.store = store
        self.cache_size = cache_size
        # One answer per (API, names): the current one. An older version is never
        # served again (every answer is the current version), so keeping it would
        # only grow the worker's memory with every write.
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self.holds = Holds(store, self.current_version, *([on_held_count] if on_held_count else []))
        self.clients = Clients(store, self.current_version, clock=store.clock)

    def current_version(self, names: tuple[str, ...]) -> str:
        return combined_version([self.store.version(n) or empty_version(n) for n in names])

    def poll(self, request: DiscoveryRequest, hold: float = 0.0) -> Answer:
        """A REST poll: answered (held up to `hold` seconds when nothing is new), and noted in the clients view."""
        answer = self._answer(request, hold, self.clients.sent_version(request))
        self.clients.saw(request, answer.version if answer.status == 200 else None)
        return answer

    def _answer(self, request: DiscoveryRequest, hold: float, sent_version: str | None) -> Answer:
        """With `hold` > 0, a request with nothing new is held up to that many seconds.

        Held: a poll that holds the current version (it would get 304), and a
        poll from a node that was already sent the current version but still
        reports another (it rejected it: answering at once would have it poll
        again at once, in a tight loop). Either is answered as soon as the
        version changes, else when the hold ends (304, or the current version
        re-sent to the node that rejected it).
        """
        version = self.current_version(request.names)
        held = 0.0
        if hold > 0 and request.version_info is not None and version in (request.version_info, sent_version):
            started = time.monotonic()
            self.holds.wait(request.names, version, hold)
            held = time.monotonic() - started
            version = self.current_version(request.names)
        # Never 304 a poll without version_info: Envoy holds nothing yet.
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
