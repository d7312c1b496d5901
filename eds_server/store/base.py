"""The one interface every registry store implements.

A store keeps each service beside the version of what Envoy receives for it,
so that a poll costs one key lookup. The version is computed by a function the
store is given (the xDS layer's), inside the same atomic step as the write, so
no reader ever sees a service without its matching version.

Backends implement only reads and `_atomically`: an atomic
read-modify-write of one service. Every registry change is expressed on top
of it as a pure function of the current service.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from ..model import Expected, PreconditionFailed, Service

# (service name, service or None when it does not exist) -> version string
VersionOf = Callable[[str, "Service | None"], str]
# current service (None when absent) -> new service (None deletes it)
Mutation = Callable[["Service | None"], "Service | None"]


@dataclass(frozen=True)
class Change:
    """The outcome of one atomic step on one service."""

    name: str
    before: Service | None
    after: Service | None
    version_before: str | None
    version_after: str | None

    @property
    def visible(self) -> bool:
        """Whether Envoy sees a difference (its version changed)."""
        return self.version_before != self.version_after


@dataclass(frozen=True)
class ClientRow:
    """What one worker saw of one Envoy node polling for one resource name (the clients view).

    Workers keep these in memory and hand them to `Store.record_clients` in
    batches, so a poll never costs a store write.
    """

    node_id: str
    resource_name: str
    cluster: str
    envoy_version: str
    resource_names: tuple[str, ...]
    api: str
    version_held: str | None  # the version_info of the node's latest poll
    last_poll: float  # epoch seconds when the node's latest poll arrived
    polls: int  # in `record_clients`: polls since the worker's previous batch; in `clients`: the total
    # Polls that still reported another version after the node had been sent
    # `sent_version`: REST has no NACK, so this is how a rejection shows. Like
    # `polls`, a batch holds the worker's own count, and the batches of every
    # worker add up: a node whose polls spread over workers is counted whole.
    rejected_polls: int
    sent_version: str | None = None  # the version the node was last sent
    # A held poll is a sign of life for as long as it is held: until then at the latest (epoch
    # seconds) while it is held, the time it was answered once it is. None: never held.
    held_until: float | None = None
    # How the node talks to us: "rest" (polls; `mode` "poll"), or "grpc" with `mode` eds-sotw,
    # eds-delta, ads-sotw or ads-delta. gRPC has an explicit NACK: the version the node rejected
    # last (None once it ACKs one) and Envoy's error_detail.message. Rows stored before these
    # fields existed read as REST rows.
    transport: str = "rest"
    mode: str = "poll"
    rejected_version: str | None = None
    rejected_message: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.node_id, self.resource_name)

    def merged_into(self, earlier: ClientRow | None) -> ClientRow:
        """This batch's row on top of what was recorded: polls add up, and so do rejections of the
        same sent version; the latest poll's fields win (a newer version sent starts the count again)."""
        if earlier is None:
            return self
        latest = self if self.last_poll >= earlier.last_poll else earlier
        rejected = latest.rejected_polls
        if earlier.sent_version == self.sent_version:
            rejected = earlier.rejected_polls + self.rejected_polls
        return dataclasses.replace(latest, polls=earlier.polls + self.polls, rejected_polls=rejected)


@dataclass(frozen=True)
class Retention:
    """Which clients-view rows a store keeps: none last polled before `forget_before`, at most
    `max_rows` in all and `max_rows_per_node` per node id; past a bound, the least recently
    polled rows go first (an Envoy that polls stays; one that stopped, or a flood of made-up
    node ids, goes)."""

    forget_before: float
    max_rows: int = 10_000
    max_rows_per_node: int = 1_000


def beyond_retention(seen: list[tuple[tuple[str, str], float]], retention: Retention) -> list[tuple[str, str]]:
    """The keys of `seen` ((node id, resource name), last poll) that the bounds of `retention` leave out."""
    newest_first = sorted(seen, key=lambda entry: (-entry[1], entry[0]))
    per_node: dict[str, int] = {}
    kept, dropped = 0, []
    for key, _ in newest_first:
        per_node[key[0]] = per_node.get(key[0], 0) + 1
        if per_node[key[0]] > retention.max_rows_per_node or kept >= retention.max_rows:
            dropped.append(key)
        else:
            kept += 1
    return dropped


class StoreUnavailable(Exception):
    """The store cannot be reached; nothing was changed."""


class CommitOutcomeUnknown(StoreUnavailable):
    """The store went away while committing: the change may or may not have been applied."""


def dump_service(service: Service) -> str:
    """The stored form of a service (JSON text), as every backend keeps it.

    orjson: a heartbeat re-writes its whole service, and json took a third of that for a large one.
    The values it cannot write (integers past 64 bits) are refused before they reach a store."""
    return orjson.dumps(service.to_record()).decode()


def load_service(text: str) -> Service:
    return Service.from_record(orjson.loads(text))


_CLIENT_FIELDS = tuple(f.name for f in dataclasses.fields(ClientRow))


def dump_client(row: ClientRow) -> str:
    """The stored form of a clients-view row (JSON text), as every backend keeps it.

    orjson writes a dataclass as it is, without `dataclasses.asdict`'s deep copy, which cost
    more than the rest of a batch: a worker writes a row per Envoy node it answered, every second.
    """
    return orjson.dumps(row).decode()


def load_client(text: str) -> ClientRow:
    fields = orjson.loads(text)
    fields["resource_names"] = tuple(fields["resource_names"])
    return ClientRow(**fields)


class Store(ABC):
    def __init__(self, version_of: VersionOf, clock: Callable[[], float] = time.time):
        self.version_of = version_of
        self.clock = clock

    # -- reads -------------------------------------------------------------
    @abstractmethod
    def get(self, name: str) -> Service | None: ...

    @abstractmethod
    def services(self) -> list[Service]:
        """Every service, ordered by name."""

    @abstractmethod
    def version(self, name: str) -> str | None:
        """The stored version of a service, None when it does not exist. The poll path's one read.

        It reflects every write that returned before the call, whichever worker or replica made
        it; a backend may answer from memory while it knows that no write happened since it
        read (sqlite: a generation counter in shared memory, store/generation.py).
        """

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """name -> stored version of every service, in one read: what a reader watching more names
        than the registry can hold compares (the registry is bounded, the names asked about are not)."""

    @abstractmethod
    def due_for_expiry(self, now: float) -> list[str]:
        """Names of the services holding a host whose deadline has passed."""

    @abstractmethod
    def count(self) -> int:
        """How many services exist.

        The registry calls it inside `_atomically`'s step to bound the number of
        services, so a backend must answer it from the state that step commits
        against (the same transaction, lock, or watched keys).
        """

    @abstractmethod
    def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve."""

    def size(self) -> tuple[int, int]:
        """(services, hosts) in the registry, for the metrics."""
        services = self.services()
        return len(services), sum(len(s.hosts) for s in services)

    # -- the clients view: what Envoy nodes poll and hold ------------------
    @abstractmethod
    def record_clients(self, rows: list[ClientRow], retention: Retention) -> int:
        """Merge a batch of rows from one worker, keyed by (node_id, resource_name); return how many
        rows the bounds of `retention` dropped (beyond_retention), besides those forgotten for age.

        `polls` adds up across batches and workers; every other field comes
        from whichever row has the latest `last_poll`. Rows last polled before
        `retention.forget_before` are dropped.
        """

    @abstractmethod
    def clients(self) -> list[ClientRow]:
        """Every recorded row, ordered by (node_id, resource_name)."""

    # -- change notification: what wakes held polls and propagation waits -------
    @abstractmethod
    def wait_for_change(self, timeout: float) -> bool:
        """Block until a write may have changed a service or the clients view since this store object's
        previous call (True), or until `timeout` seconds pass (False).

        One caller per store object: the worker's hold watcher, which then
        re-reads the versions of the services it holds polls for, and wakes
        the propagation waits, which re-read the clients view. Waking for a
        write that changed nothing a poll sees is allowed; sleeping through a
        change is not, whichever worker, replica or sweeper wrote it (a batch
        of clients-view rows included).
        """

    def close(self) -> None:  # noqa: B027  (a store without connections has nothing to release)
        """Release connections."""

    # -- writes ------------------------------------------------------------
    @abstractmethod
    def _atomically(
        self, name: str, step: Callable[[Service | None, str | None], tuple[Service | None, str | None]]
    ) -> Change:
        """Read `name` and its stored version, call `step` on them, and write what it returns, as one atomic step.

        `step` returns the new service (None deletes) and its version; when it
        returns the very object it was given, nothing is written. An exception
        from `step` aborts the step with nothing written.
        """

    def update(self, name: str, mutate: Mutation, expected: Expected | None = None) -> Change:
        """Apply `mutate` to the current state of `name` atomically.

        With `expected`, PreconditionFailed is raised when the service is no longer in that state.
        """

        def step(current: Service | None, version: str | None) -> tuple[Service | None, str | None]:
            if expected is not None and not expected.met_by(current):
                raise PreconditionFailed(name, current.etag if current else None)
            after = mutate(current)
            if after is current:
                return current, None
            if after is None:
                return None, None
            # Equal services render the same assignment (only deadlines are left out of equality):
            # a heartbeat keeps the version without rendering its whole service again.
            return after, (version if after == current else self.version_of(name, after))

        return self._atomically(name, step)

    def writes_refused_at(self) -> float | None:
        """The last moment (clock seconds) the store refused a write, as far as the processes using it
        noticed; None when none did. A store that never refuses one for want of itself leaves it None."""
        return None

    def expire(self, now: float | None = None) -> list[Change]:
        """Remove every host whose ttl ran out; one atomic step per service.

        The removal is re-checked inside each step, so when several workers or
        replicas sweep at once, each expiry is applied exactly once. A host is
        removed only once it has had a whole ttl to heartbeat in since the store
        last refused a write: its own heartbeats may have been among those refused.
        """
        now = self.clock() if now is None else now
        writes_refused_at = self.writes_refused_at()

        def drop_expired(current: Service | None) -> Service | None:
            if current is None or current.next_expiry is None or current.next_expiry > now:
                return current
            after = current.without_expired(now, writes_refused_at)
            return current if after.hosts == current.hosts else after

        changes = [self.update(name, drop_expired) for name in self.due_for_expiry(now)]
        return [c for c in changes if c.before is not c.after]
