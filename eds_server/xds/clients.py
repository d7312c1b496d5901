"""The clients view: which Envoy nodes poll or stream, the version each holds, and which reject it.

REST has no NACK: an Envoy that rejected an answer just keeps polling with
the version it had. Each worker notes, per node, the version it last sent;
a poll that reports another one after that is a rejected poll. The rejected
polls of every worker add up per version sent, and after `STUCK_AFTER_POLLS`
of them the node shows as stuck, whichever workers its polls reached.

A gRPC stream knows more: Envoy ACKs and NACKs each response explicitly.
Its rows come ready-made from the stream's bookkeeping (xds/streams.py) and
go to the store the same way (`note_stream`).

A poll only touches this worker's memory. The rows reach the store in one
batch per `flush` (every second or so, from a background thread), where the
batches of every worker and replica add up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..store import ClientRow, Store
from .request import DiscoveryRequest

STUCK_AFTER_POLLS = 3


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
        """It will not take the current version. REST: it was sent it and kept reporting another one
        (not merely behind a newer write). gRPC: it NACKed it."""
        row = self.row
        if row.transport != "rest":
            return self.rejected
        return not self.in_sync and row.sent_version == self.current_version and row.rejected_polls >= STUCK_AFTER_POLLS

    @property
    def rejected(self) -> bool:
        """The node rejected the current version: inferred over REST (`stuck`), NACKed over gRPC."""
        row = self.row
        if row.transport == "rest":
            return self.stuck
        return row.rejected_version is not None and row.rejected_version == self.current_version

    @property
    def error(self) -> str | None:
        """Envoy's own words for the rejection (gRPC's NACK carries them; REST has none)."""
        return self.row.rejected_message if self.rejected else None


class Clients:
    def __init__(
        self,
        store: Store,
        current_version: Callable[[tuple[str, ...]], str],
        clock: Callable[[], float] = time.time,
        forget_after: float = 24 * 3600,
    ):
        self.store = store
        self.current_version = current_version
        self.clock = clock
        self.forget_after = forget_after
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], _Seen] = {}
        self._unsent: dict[tuple[str, str], ClientRow] = {}  # rows of a flush the store did not take
        # (api, node id, names) -> [version this worker last sent in a 200, last poll]
        self._sent: dict[tuple[str, str, tuple[str, ...]], list] = {}
        self._streamed: dict[tuple[str, str], ClientRow] = {}  # gRPC streams' rows since the last flush

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
            sent_before = node[0]
            rejected = sent_before is not None and request.version_info != sent_before
            node[1] = now
            if sent is not None:
                node[0] = sent
            for name in request.names:
                seen = self._pending.get((request.node_id, name))
                if seen is None:
                    seen = self._pending[(request.node_id, name)] = _Seen(sent_before)
                seen.note(request, now, rejected, node[0])

    def note_stream(self, rows: list[ClientRow]) -> None:
        """Rows from a gRPC stream's bookkeeping; memory only, like a poll's."""
        with self._lock:
            for row in rows:
                self._streamed[row.key] = row.merged_into(self._streamed.get(row.key))

    def flush(self) -> None:
        """Hand this worker's rows to the store in one batch; kept for the next try if that fails."""
        forget_before = self.clock() - self.forget_after
        with self._lock:
            pending, self._pending = self._pending, {}
            rows, self._unsent = self._unsent, {}
            streamed, self._streamed = self._streamed, {}
            for key, row in streamed.items():
                rows[key] = row.merged_into(rows.get(key))
            for key in [k for k, sent in self._sent.items() if sent[1] < forget_before]:
                del self._sent[key]
        for (_, name), seen in pending.items():
            row = seen.row(name)
            rows[row.key] = row.merged_into(rows.get(row.key))
        if not rows:
            return
        try:
            self.store.record_clients(list(rows.values()), forget_before)
        except Exception:
            with self._lock:
                for key, row in rows.items():
                    newer = self._unsent.get(key)
                    self._unsent[key] = row if newer is None else newer.merged_into(row)
            raise

    def statuses(self, service: str | None = None) -> list[ClientStatus]:
        """Every row recorded by any worker, with the current version; this worker's own rows are flushed first."""
        self.flush()
        rows = [r for r in self.store.clients() if service is None or r.resource_name == service]
        return [ClientStatus(row, self.current_version(row.resource_names)) for row in rows]
