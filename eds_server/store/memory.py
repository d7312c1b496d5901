"""An ephemeral store in one process's memory: for tests and single-worker trials."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..model import Service
from .base import Change, ClientRow, Retention, Store, beyond_retention


class MemoryStore(Store):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._services: dict[str, tuple[Service, str]] = {}
        self._clients: dict[tuple[str, str], ClientRow] = {}
        # Made by the first wait_for_change, in the process (and under the
        # threading of the worker: gevent) that waits; gunicorn workers inherit
        # this store from the master.
        self._changes: threading.Condition | None = None
        self._generation = 0  # writes so far
        self._generation_seen = 0  # by the previous wait_for_change

    def get(self, name: str) -> Service | None:
        entry = self._services.get(name)
        return entry[0] if entry else None

    def services(self) -> list[Service]:
        with self._lock:
            return [self._services[name][0] for name in sorted(self._services)]

    def version(self, name: str) -> str | None:
        entry = self._services.get(name)
        return entry[1] if entry else None

    def versions(self) -> dict[str, str]:
        with self._lock:
            return {name: version for name, (_, version) in self._services.items()}

    def count(self) -> int:
        # Without the lock: `_atomically` holds it while its step asks.
        return len(self._services)

    def due_for_expiry(self, now: float) -> list[str]:
        with self._lock:
            return [
                name
                for name, (service, _) in self._services.items()
                if service.next_expiry is not None and service.next_expiry <= now
            ]

    def record_clients(self, rows: list[ClientRow], retention: Retention) -> int:
        with self._lock:
            for row in rows:
                self._clients[row.key] = row.merged_into(self._clients.get(row.key))
            for key in [k for k, row in self._clients.items() if row.last_poll < retention.forget_before]:
                del self._clients[key]
            dropped = beyond_retention([(k, row.last_poll) for k, row in self._clients.items()], retention)
            for key in dropped:
                del self._clients[key]
            self._generation += 1
        self._notify()
        return len(dropped)

    def clients(self) -> list[ClientRow]:
        with self._lock:
            return [self._clients[key] for key in sorted(self._clients)]

    def ping(self) -> None:
        """Always reachable: it lives in this process."""

    def _atomically(self, name: str, step: Callable) -> Change:
        with self._lock:
            current, version_before = self._services.get(name, (None, None))
            after, version_after = step(current, version_before)
            if after is current:
                return Change(name, current, current, version_before, version_before)
            if after is None:
                del self._services[name]
            else:
                self._services[name] = (after, version_after)
            self._generation += 1
        self._notify()
        return Change(name, current, after, version_before, version_after)

    def _notify(self) -> None:
        changes = self._changes
        if changes is not None:
            with changes:
                changes.notify_all()

    def wait_for_change(self, timeout: float) -> bool:
        if self._changes is None:
            self._changes = threading.Condition()
        with self._changes:
            seen = self._generation_seen
            changed = self._changes.wait_for(lambda: self._generation != seen, timeout)
            self._generation_seen = self._generation
            return changed
