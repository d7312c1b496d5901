"""An ephemeral store in one process's memory: for tests and single-worker trials."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..model import Service
from .base import Change, Store


class MemoryStore(Store):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._services: dict[str, tuple[Service, str]] = {}

    def get(self, name: str) -> Service | None:
        entry = self._services.get(name)
        return entry[0] if entry else None

    def services(self) -> list[Service]:
        with self._lock:
            return [self._services[name][0] for name in sorted(self._services)]

    def version(self, name: str) -> str | None:
        entry = self._services.get(name)
        return entry[1] if entry else None

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

    def ping(self) -> None:
        """Always reachable: it lives in this process."""

    def _atomically(self, name: str, step: Callable) -> Change:
        with self._lock:
            current, version_before = self._services.get(name, (None, None))
            after, version_after = step(current)
            if after is current:
                return Change(name, current, current, version_before, version_before)
            if after is None:
                del self._services[name]
            else:
                self._services[name] = (after, version_after)
            return Change(name, current, after, version_before, version_after)
