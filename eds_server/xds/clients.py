"""The clients view: which Envoy nodes poll, the version each holds, and which are stuck.

REST has no NACK: an Envoy that rejected an answer just keeps polling with
the version it had. Each worker notes, per node, the version it last sent;
a node that keeps reporting another one after that is counting rejected polls,
and after `STUCK_AFTER_POLLS` of them it shows as stuck.

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
from .discovery import Answer, DiscoveryRequest

STUCK_AFTER_POLLS = 3


class _Seen:
    """One (node, resource name) as this worker saw it since its last flush."""

    __slots__ = ("request", "last_poll", "polls", "rejected_polls")

    def __init__(self, request: DiscoveryRequest, last_poll: float, polls: int, rejected_polls: int):
        self.request = request
        self.last_poll = last_poll
        self.polls = polls
        self.rejected_polls = rejected_polls

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
        return not self.in_sync and self.row.rejected_polls >= STUCK_AFTER_POLLS


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
        # (api, node id, names) -> [version this worker last sent in a 200, rejected polls since, last poll]
        self._sent: dict[tuple[str, str, tuple[str, ...]], list] = {}

    def sent_version(self, request: DiscoveryRequest) -> str | None:
        """The version this worker last sent this node for these names, if any."""
        sent = self._sent.get((request.api, request.node_id, request.names))
        return sent[0] if sent else None

    def saw(self, request: DiscoveryRequest, answer: Answer) -> None:
        """Note one answered poll; memory only."""
        key = (request.api, request.node_id, request.names)
        now = self.clock()
        with self._lock:
            sent = self._sent.get(key)
            if sent is None or request.version_info is None:  # a node (re)starting holds nothing yet
                sent = self._sent[key] = [None, 0, now]
            elif request.version_info == sent[0]:
                sent[1] = 0
            else:
                sent[1] += 1
            sent[2] = now
            if answer.status == 200:
                sent[0] = answer.version
            for name in request.names:
                seen = self._pending.get((request.node_id, name))
                if seen is None:
                    self._pending[(request.node_id, name)] = _Seen(request, now, 1, sent[1])
                else:
                    seen.request, seen.last_poll, seen.rejected_polls = request, now, sent[1]
                    seen.polls += 1

    def flush(self) -> None:
        """Hand this worker's rows to the store in one batch; kept for the next try if that fails."""
        forget_before = self.clock() - self.forget_after
        with self._lock:
            pending, self._pending = self._pending, {}
            for key in [k for k, sent in self._sent.items() if sent[2] < forget_before]:
                del self._sent[key]
        if not pending:
            return
        try:
            self.store.record_clients([seen.row(name) for (_, name), seen in pending.items()], forget_before)
        except Exception:
            with self._lock:
                for key, seen in pending.items():
                    newer = self._pending.setdefault(key, seen)
                    if newer is not seen:
                        newer.polls += seen.polls
            raise

    def statuses(self, service: str | None = None) -> list[ClientStatus]:
        """Every row recorded by any worker, with the current version; this worker's own rows are flushed first."""
        self.flush()
        rows = [r for r in self.store.clients() if service is None or r.resource_name == service]
        return [ClientStatus(row, self.current_version(row.resource_names)) for row in rows]
