"""The clients view: which Envoy nodes poll, the version each holds, and which are stuck.

REST has no NACK: an Envoy that rejected an answer just keeps polling with
the version it had. Each worker notes, per node, the version it last sent;
a poll that reports another one after that is a rejected poll. The rejected
polls of every worker add up per version sent, and after `STUCK_AFTER_POLLS`
of them the node shows as stuck, whichever workers its polls reached.

A poll only touches this worker's memory. The rows reach the store in one
batch per `flush` (every second or so, from a background thread), where the
batches of every worker and replica add up.

Polls need no credentials, so what they may put here is bounded: each value
by the request reader (xds/request.py), the rows by `ClientsLimits`, in the
store (the least recently polled go first) and in this worker's memory
between two flushes (there too, what polled least recently goes first).
Reaching a bound is logged once, until the view is back within its bounds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..store import ClientRow, Retention, Store
from .request import DiscoveryRequest

log = logging.getLogger("eds_server.clients")

STUCK_AFTER_POLLS = 3


@dataclass(frozen=True)
class ClientsLimits:
    max_rows: int = 10_000
    max_rows_per_node: int = 1_000
    forget_after: float = 24 * 3600


class _Seen:
    """One (node, resource name) as this worker saw it since its last flush."""

    __slots__ = ("request", "last_poll", "polls", "rejected_polls", "sent_version")

    def __init__(self, sent_version: str | None):
        self.polls = self.rejected_polls = 0
        self.sent_version = sent_version

    def note(self, request: DiscoveryRequest, now: float, rejected: bool, sent_version: str | None) -> None:
        """One poll: `rejected` against the version sent before it; `sent_version` is the one sent now."""
        self.request, self.last_poll = request, now
        self.polls += 1
        self.rejected_polls += rejected
        if sent_version != self.sent_version:
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
        )


@dataclass(frozen=True)
class ClientStatus:
    row: ClientRow
    current_version: str

    @property
    def in_sync(self) -> bool:
        return self.row.version_held == self.current_version

    @property
    def stuck(self) -> bool:
        """It was sent the current version and kept reporting another one (not merely behind a newer write)."""
        row = self.row
        return not self.in_sync and row.sent_version == self.current_version and row.rejected_polls >= STUCK_AFTER_POLLS


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
        self._lock = threading.Lock()
        self._pending: OrderedDict[tuple[str, str], _Seen] = OrderedDict()  # least recently polled first
        self._unsent: dict[tuple[str, str], ClientRow] = {}  # rows of a flush the store did not take
        # (api, node id, names) -> [version this worker last sent in a 200, last poll], least recent first
        self._sent: OrderedDict[tuple[str, str, tuple[str, ...]], list] = OrderedDict()
        self._left_out = 0  # rows left out for the bounds since the last flush
        self._at_bound = False  # said so in the log already

    def sent_version(self, request: DiscoveryRequest) -> str | None:
        """The version this worker last sent this node for these names, if any."""
        sent = self._sent.get((request.api, request.node_id, request.names))
        return sent[0] if sent else None

    def saw(self, request: DiscoveryRequest, sent: str | None) -> None:
        """Note one answered poll that was `sent` this version (None: told nothing changed); memory only."""
        key = (request.api, request.node_id, request.names)
        now = self.clock()
        with self._lock:
            node = self._sent.get(key)
            if node is None or request.version_info is None:  # a node (re)starting holds nothing yet
                node = self._sent[key] = [None, now]
                while len(self._sent) > self.limits.max_rows:
                    self._sent.popitem(last=False)  # forgets what the least recent node was sent
            self._sent.move_to_end(key)
            sent_before = node[0]
            rejected = sent_before is not None and request.version_info != sent_before
            node[1] = now
            if sent is not None:
                node[0] = sent
            for name in request.names:
                key = (request.node_id, name)
                seen = self._pending.get(key)
                if seen is None:
                    seen = self._pending[key] = _Seen(sent_before)
                    if len(self._pending) > self.limits.max_rows:
                        self._pending.popitem(last=False)  # what polled least recently waits for its next poll
                        self._left_out += 1
                self._pending.move_to_end(key)
                seen.note(request, now, rejected, node[0])

    def flush(self) -> None:
        """Hand this worker's rows to the store in one batch; kept for the next try if that fails."""
        limits = self.limits
        retention = Retention(self.clock() - limits.forget_after, limits.max_rows, limits.max_rows_per_node)
        with self._lock:
            pending, self._pending = self._pending, OrderedDict()
            rows, self._unsent = self._unsent, {}
            left_out, self._left_out = self._left_out, 0
            while self._sent and next(iter(self._sent.values()))[1] < retention.forget_before:
                self._sent.popitem(last=False)
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
