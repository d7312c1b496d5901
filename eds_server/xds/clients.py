"""The clients view: which Envoy nodes poll or stream, the version each holds, and which reject it.

REST has no NACK (docs/PROTOCOL.md#no-nack-over-rest): an Envoy that
rejected an answer just keeps polling with the version it had. Each worker
notes, per node, the version it last sent and the version the node reported
in the poll answered with it. A later poll that still reports that same
version rejected what was sent; one that reports a third version took it
from another worker or replica (after a rollback, say) and says nothing
about this worker's answer. The rejected polls of every worker add up per
version sent, and a node that rejected the current version shows as stuck,
whichever workers its polls reached.

A poll is noted twice, both times in this worker's memory only: when it
arrives (what the node holds, whether it rejected, and a sign of life that
lasts as long as the poll is held: a long-polling Envoy says nothing more
until its held poll is answered, up to 25 s later) and when it is answered
(what it was sent). The rows reach the store in one batch per `flush`, every
second or so from a background thread, and sooner after news (a node
reporting another version than before, or rejecting one: what a propagation
wait waits for, see `news`); the batches of every worker and replica add up.

A gRPC stream knows more: Envoy ACKs and NACKs each response explicitly.
Its rows come ready-made from the stream's bookkeeping (xds/streams.py) and
go to the store the same way (`note_stream`).

Polls need no credentials, so what they may put here is bounded: each value
by the request reader (xds/request.py), the rows by `ClientsLimits`, in the
store and in this worker's memory between two flushes (in both, what polled
least recently goes first). Reaching a bound is logged once, until the view
is back within its bounds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ..store import ClientRow, Retention, Store
from .request import DiscoveryRequest

log = logging.getLogger("eds_server.clients")


# How long a flush may wait for answers on their way out (held polls a change released; a change's
# gRPC pushes, until ACKed): a flush competes with them for the process (under gevent it blocks the
# worker, in the gRPC process its thread holds the GIL), so a fan-out to thousands of Envoys ends
# sooner when the flush waits for it. The view is then late, never wrong.
FLUSH_WAITS_FOR_ANSWERS_AT_MOST = 5.0


@dataclass(frozen=True)
class ClientsLimits:
    max_rows: int = 10_000
    max_rows_per_node: int = 1_000
    forget_after: float = 24 * 3600


class _Node:
    """What this worker knows of one node polling for one set of names."""

    __slots__ = ("sent", "held_when_sent", "reported", "last_poll", "rejection_told")

    def __init__(self, now: float):
        self.sent: str | None = None  # the version this worker last sent it in a 200
        self.held_when_sent: str | None = None  # the version_info of the poll answered with `sent`
        self.reported: str | None = None  # the version_info of its latest poll here
        self.last_poll = now
        self.rejection_told: str | None = None  # the sent version whose rejection was last news


class _Seen:
    """One (node, resource name) as this worker saw it since its last flush."""

    __slots__ = ("request", "last_poll", "polls", "rejected_polls", "sent_version", "held_until")

    def __init__(self, request: DiscoveryRequest, last_poll: float, sent_version: str | None):
        self.request, self.last_poll = request, last_poll
        self.polls = self.rejected_polls = 0
        self.sent_version = sent_version
        self.held_until: float | None = None

    def arrived(self, request: DiscoveryRequest, now: float, rejected: bool, held_until: float | None) -> None:
        """A poll arrived: `rejected` the version sent before it; it may be held until `held_until`."""
        self.request, self.last_poll, self.held_until = request, now, held_until
        self.polls += 1
        self.rejected_polls += rejected

    def answered(self, now: float, sent_version: str | None) -> None:
        """That poll was answered; `sent_version` is the version the node has been sent now."""
        if self.held_until is not None:
            self.held_until = now
        if sent_version != self.sent_version:  # rejections count against the version sent
            self.sent_version, self.rejected_polls = sent_version, 0

    def row(self, name: str) -> ClientRow:
        request = self.request
        return ClientRow(
            node_id=request.node_id,
            resource_name=name,
            cluster=request.node_cluster,
            envoy_version=request.envoy_version,
            resource_names=request.names,
            api=request.api,
            version_held=request.version_info,
            last_poll=self.last_poll,
            polls=self.polls,
            rejected_polls=self.rejected_polls,
            sent_version=self.sent_version,
            held_until=self.held_until,
        )


class Arrival(NamedTuple):
    """A poll as noted when it arrived, handed back with its answer."""

    request: DiscoveryRequest
    at: float
    held_until: float | None  # the latest it may be held until; None: not to be held
    rejects: str | None  # the version this poll rejected: sent to the node, which still reports what it had


@dataclass(frozen=True)
class ClientStatus:
    row: ClientRow
    current_version: str

    @property
    def in_sync(self) -> bool:
        return self.row.version_held == self.current_version

    @property
    def stuck(self) -> bool:
        """It will not take the current version. REST: it was sent it and reported the version it had
        again (not merely behind a newer write). gRPC: it NACKed it."""
        row = self.row
        if row.transport != "rest":
            return self.rejected
        return not self.in_sync and row.sent_version == self.current_version and row.rejected_polls > 0

    @property
    def rejected(self) -> bool:
        """The node rejected the current version: inferred over REST (`stuck`), NACKed over gRPC."""
        row = self.row
        if row.transport == "rest":
            return self.stuck
        return row.rejected_version is not None and row.rejected_version == self.current_version

    @property
    def rejection(self) -> str | None:
        """Why it rejected, in Envoy's own words: a gRPC NACK's error_detail; REST carries none."""
        return self.row.rejected_message if self.rejected else None

    @property
    def last_seen(self) -> float:
        """Its last sign of life (epoch seconds): a poll arriving, or a held poll for as long as it is held."""
        return max(self.row.last_poll, self.row.held_until or 0.0)


class Clients:
    def __init__(
        self,
        store: Store,
        current_version: Callable[[tuple[str, ...]], str],
        clock: Callable[[], float] = time.time,
        limits: ClientsLimits = ClientsLimits(),
    ):
        self.store = store
        self.current_version = current_version
        self.clock = clock
        self.limits = limits
        # Set when a poll brings what a propagation wait waits for: the flusher then goes early.
        self.news = threading.Event()
        self._lock = threading.Lock()
        # Both least recently polled first, and bounded to limits.max_rows.
        self._pending: OrderedDict[tuple[str, str], _Seen] = OrderedDict()
        self._nodes: OrderedDict[tuple[str, str, tuple[str, ...]], _Node] = OrderedDict()  # (api, node id, names)
        self._unsent: dict[tuple[str, str], ClientRow] = {}  # rows of a flush the store did not take
        self._left_out = 0  # rows left out for the bounds since the last flush
        self._at_bound = False  # said so in the log already
        self._streamed: dict[tuple[str, str], ClientRow] = {}  # gRPC streams' rows since the last flush

    def _seen(self, key: tuple[str, str], make: Callable[[], _Seen]) -> _Seen:
        """The pending row of `key`, made when absent; past the bound, the least recently polled row waits
        for its node's next poll. Called with the lock held."""
        seen = self._pending.get(key)
        if seen is None:
            seen = self._pending[key] = make()
            if len(self._pending) > self.limits.max_rows:
                self._pending.popitem(last=False)
                self._left_out += 1
        self._pending.move_to_end(key)
        return seen

    def arrived(self, request: DiscoveryRequest, hold: float = 0.0) -> Arrival:
        """Note a poll as it arrives, one that may be held up to `hold` seconds; memory only."""
        now = self.clock()
        with self._lock:
            key = (request.api, request.node_id, request.names)
            node = self._nodes.get(key)
            if node is None or request.version_info is None:  # a node (re)starting holds nothing yet
                node = self._nodes[key] = _Node(now)
                while len(self._nodes) > self.limits.max_rows:
                    self._nodes.popitem(last=False)  # forgets what the least recent node was sent
                news = True
            else:
                news = request.version_info != node.reported
            self._nodes.move_to_end(key)
            # It still reports the version it had when it was sent another one.
            rejected = node.sent not in (None, request.version_info) and request.version_info == node.held_when_sent
            rejects = node.sent if rejected else None
            # An Envoy rejecting a version re-polls with it for as long as it rejects it: news once, not
            # at every poll (each would wake the flush early).
            if rejects is not None and rejects != node.rejection_told:
                news, node.rejection_told = True, rejects
            node.reported, node.last_poll = request.version_info, now
            held_until = now + hold if hold > 0 else None
            for name in request.names:
                seen = self._seen((request.node_id, name), lambda: _Seen(request, now, node.sent))
                seen.arrived(request, now, rejects is not None, held_until)
        if news:
            self.news.set()
        return Arrival(request, now, held_until, rejects)

    def answered(self, arrival: Arrival, sent: str | None) -> None:
        """Note the answer to an arrived poll: it was `sent` this version (None: told nothing changed)."""
        if sent is None and arrival.held_until is None:  # nothing new sent, no hold to end: nothing to note
            return
        request = arrival.request
        now = self.clock()
        with self._lock:
            node = self._nodes.get((request.api, request.node_id, request.names))
            if node is None:  # forgot meanwhile (a flush of old nodes, the bound): as good as new
                node = self._nodes[(request.api, request.node_id, request.names)] = _Node(now)
            sent_before = node.sent
            if sent is not None:
                node.sent, node.held_when_sent = sent, request.version_info
            for name in request.names:
                fresh = (request.node_id, name) not in self._pending  # its arrival went out with the last flush
                seen = self._seen((request.node_id, name), lambda: _Seen(request, arrival.at, sent_before))
                if fresh:
                    seen.held_until = arrival.held_until
                if seen.last_poll == arrival.at:  # not a later poll of the same node id, answered first
                    seen.answered(now, node.sent)

    def note_stream(self, rows: list[ClientRow]) -> None:
        """Rows from a gRPC stream's bookkeeping; memory only, like a poll's."""
        with self._lock:
            for row in rows:
                self._streamed[row.key] = row.merged_into(self._streamed.get(row.key))

    def flush(self) -> None:
        """Hand this worker's rows to the store in one batch; kept for the next try if that fails."""
        limits = self.limits
        retention = Retention(self.clock() - limits.forget_after, limits.max_rows, limits.max_rows_per_node)
        with self._lock:
            pending, self._pending = self._pending, OrderedDict()
            rows, self._unsent = self._unsent, {}
            left_out, self._left_out = self._left_out, 0
            for key in [k for k, node in self._nodes.items() if node.last_poll < retention.forget_before]:
                del self._nodes[key]
            streamed, self._streamed = self._streamed, {}
            for key, row in streamed.items():
                rows[key] = row.merged_into(rows.get(key))
        for (_, name), seen in pending.items():
            row = seen.row(name)
            rows[row.key] = row.merged_into(rows.get(row.key))
        if not rows:
            return
        try:
            left_out += self.store.record_clients(list(rows.values()), retention)
        except Exception:
            with self._lock:
                for key, row in rows.items():
                    newer = self._unsent.get(key)
                    self._unsent[key] = row if newer is None else newer.merged_into(row)
                for key in list(self._unsent)[: max(0, len(self._unsent) - limits.max_rows)]:
                    del self._unsent[key]  # an outage keeps at most a bound's worth of rows for later
            raise
        self._say_whether_at_bound(left_out)

    def _say_whether_at_bound(self, left_out: int) -> None:
        if left_out and not self._at_bound:
            log.warning(
                "clients view at its bound (clients_max_rows=%d, clients_max_rows_per_node=%d): %d rows left out, "
                "the least recently polled first; polls are answered as always. Said once until it is within "
                "its bounds again.",
                self.limits.max_rows,
                self.limits.max_rows_per_node,
                left_out,
            )
        elif not left_out and self._at_bound:
            log.info("clients view within its bounds again")
        self._at_bound = bool(left_out)

    def statuses(self, service: str | None = None) -> list[ClientStatus]:
        """Every row recorded by any worker, with the current version; this worker's own rows are flushed first."""
        self.flush()
        rows = [r for r in self.store.clients() if service is None or r.resource_name == service]
        return [ClientStatus(row, self.current_version(row.resource_names)) for row in rows]
