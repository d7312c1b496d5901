"""Propagation: whether every Envoy subscribed to a service holds a version of it, or a later one.

One rule, whatever the transport (it reads only `ClientStatus`):

- Subscribed: a node with a row for the service whose last sign of life is at
  most `subscribed_within` seconds old. A sign of life is a poll arriving, and
  a held poll for as long as it is held: a long-polling Envoy sends nothing
  between its poll's arrival and its answer, up to 25 s later. A node that
  went away (stopped, crashed, moved to another server) stops counting once
  that window has passed, and is listed as stopped polling: it never blocks a
  wait for longer.
- Has version V: it holds V, or a version that was the service's current one
  at some moment of the wait (each look reads the current version). Versions
  are hashes with no order of their own; what orders them is that V was
  written before the wait began (a write's own version, or one the caller was
  given), so any version current since then is later. A node holding a
  version that came between V and the wait counts as behind until it gets the
  current one (it is behind the current one anyway). A node polling several
  names at once reports one version for them all: it has V only when it holds
  the current combination.
- Rejected: it has not, and it rejected the current version
  (`ClientStatus.rejected`: over REST it reported the version it had again
  after it was sent the current one; over gRPC, a NACK).
- Otherwise: behind.

A wait ends in sync when every subscribed node has V, at once when one
rejected it, else when its time is up. Between two looks it sleeps on the
store's change signal (`Holds.listening`): nothing runs while nothing
changes, and a write or a batch of clients-view rows from any worker or
replica wakes it. It also wakes when a node behind leaves the window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .clients import Clients, ClientStatus
from .holds import Holds

# The state of each node, and the outcome of a wait (in sync, rejected, or timed out: someone is behind).
IN_SYNC, BEHIND, REJECTED, STOPPED_POLLING = "in_sync", "behind", "rejected", "stopped_polling"
TIMED_OUT = "timed_out"
# The shortest sleep between two looks, however soon a node would leave the window.
MIN_NAP = 0.05


@dataclass(frozen=True)
class Envoy:
    status: ClientStatus
    state: str


@dataclass(frozen=True)
class Propagation:
    """One look at a service's Envoys: what each holds against the version waited for."""

    service: str
    version: str
    current_version: str
    envoys: tuple[Envoy, ...]
    waited: float  # seconds since the wait began
    looked_at: float  # epoch seconds, by the clients view's clock

    def last_seen(self, envoy: Envoy) -> float:
        """An Envoy's last sign of life as of this look: now for one whose poll is held right now."""
        return min(envoy.status.last_seen, self.looked_at)

    def named(self, state: str) -> list[str]:
        """The node ids in `state`."""
        return [envoy.status.row.node_id for envoy in self.envoys if envoy.state == state]

    @property
    def subscribed(self) -> int:
        return sum(envoy.state != STOPPED_POLLING for envoy in self.envoys)

    @property
    def have_it(self) -> int:
        return sum(envoy.state == IN_SYNC for envoy in self.envoys)

    @property
    def outcome(self) -> str:
        states = {envoy.state for envoy in self.envoys}
        if REJECTED in states:
            return REJECTED
        return TIMED_OUT if BEHIND in states else IN_SYNC


def holds_version(status: ClientStatus, version: str, later: set[str]) -> bool:
    """Whether the node holds `version`, or one of the versions known to be `later`."""
    if len(status.row.resource_names) > 1:
        return status.in_sync
    return status.row.version_held == version or status.row.version_held in later


def is_subscribed(status: ClientStatus, now: float, subscribed_within: float) -> bool:
    return now - status.last_seen <= subscribed_within


def state_of(status: ClientStatus, version: str, later: set[str], now: float, subscribed_within: float) -> str:
    if not is_subscribed(status, now, subscribed_within):
        return STOPPED_POLLING
    if holds_version(status, version, later):
        return IN_SYNC
    return REJECTED if status.rejected else BEHIND


class Propagations:
    """The propagation waits of one worker, on its clients view and its store's change signal."""

    def __init__(
        self,
        clients: Clients,
        holds: Holds,
        current_version: Callable[[tuple[str, ...]], str],
        subscribed_within: float,
    ):
        self.clients = clients
        self.holds = holds
        self.current_version = current_version
        self.subscribed_within = subscribed_within

    def subscribed(self, status: ClientStatus) -> bool:
        """Whether the node counts as subscribed now: a sign of life within the window."""
        return is_subscribed(status, self.clients.clock(), self.subscribed_within)

    def wait(self, service: str, version: str, seconds: float) -> Propagation:
        """Look until every subscribed Envoy has `version` of `service` (or later), one rejected it,
        or `seconds` have passed (0: one look). Also ends, with the last look, when the worker stops."""
        started = time.monotonic()
        later: set[str] = set()
        with self.holds.listening() as changed:
            while True:
                result = self._look(service, version, later, started)
                left = seconds - result.waited
                if result.outcome != TIMED_OUT or left <= 0:
                    return result
                if not changed(min(left, max(MIN_NAP, self._next_departure(result)))):
                    return result

    def _look(self, service: str, version: str, later: set[str], started: float) -> Propagation:
        current = self.current_version((service,))
        later.add(current)
        statuses = self.clients.statuses(service)
        now = self.clients.clock()
        envoys = tuple(Envoy(s, state_of(s, version, later, now, self.subscribed_within)) for s in statuses)
        return Propagation(service, version, current, envoys, time.monotonic() - started, now)

    def _next_departure(self, result: Propagation) -> float:
        """Seconds until a node behind leaves the subscribed window (and stops counting)."""
        now = self.clients.clock()
        return min(
            (e.status.last_seen + self.subscribed_within - now for e in result.envoys if e.state == BEHIND),
            default=math.inf,
        )
