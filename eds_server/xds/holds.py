"""Held polls: a poll that has nothing new to say waits for its services to change.

Each worker has one `Holds`: held polls register here and sleep, and one
watcher thread (a greenlet under gevent) waits on the store's change
notification and wakes every poll whose services' version moved, whichever
worker, replica or TTL sweep made the change. The watcher runs only while
polls are held.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..store import Store

log = logging.getLogger("eds_server.holds")
# How long the watcher waits on the store before it looks again whether it
# still has polls to watch (and whether the worker stops).
WATCH_TIMEOUT = 1.0


class Holds:
    def __init__(
        self,
        store: Store,
        current_version: Callable[[tuple[str, ...]], str],
        on_count: Callable[[int], None] = lambda delta: None,
    ):
        self.store = store
        self.current_version = current_version
        self.on_count = on_count  # +1 / -1 as polls start and stop being held (a metric)
        self._lock = threading.Lock()
        # names -> {wake-up event: the version the poll waits to see change}
        self._waiting: dict[tuple[str, ...], dict[threading.Event, str]] = {}
        self._watching = False
        self._stopping = False

    def wait(self, names: tuple[str, ...], version: str, seconds: float) -> None:
        """Return once `names` no longer has `version`, after `seconds`, or when the worker stops."""
        wake = threading.Event()
        with self._lock:
            if self._stopping:
                return
            self._waiting.setdefault(names, {})[wake] = version
            if not self._watching:
                self._watching = True
                threading.Thread(target=self._watch, name="eds-hold-watcher", daemon=True).start()
        self.on_count(1)
        try:
            # A write may have landed between the caller's read and the registration.
            if self.current_version(names) == version:
                wake.wait(seconds)
        finally:
            self.on_count(-1)
            with self._lock:
                waiters = self._waiting[names]
                del waiters[wake]
                if not waiters:
                    del self._waiting[names]

    def stop(self) -> None:
        """The worker stops: every held poll is answered now, and none is held from here on."""
        with self._lock:
            self._stopping = True
            wakes = [wake for waiters in self._waiting.values() for wake in waiters]
        for wake in wakes:
            wake.set()

    def _watch(self) -> None:
        while True:
            try:
                changed = self.store.wait_for_change(WATCH_TIMEOUT)
            except Exception as error:  # the store is away: held polls still end by their own timeout
                log.warning("hold watcher: %s; retrying in %ss", error, WATCH_TIMEOUT)
                threading.Event().wait(WATCH_TIMEOUT)
                changed = True
            with self._lock:
                if not self._waiting or self._stopping:
                    self._watching = False
                    return
                held = [(names, list(waiters.items())) for names, waiters in self._waiting.items()]
            if changed:
                self._release_changed(held)

    def _release_changed(self, held) -> None:
        for names, waiters in held:
            try:
                current = self.current_version(names)
            except Exception as error:
                log.warning("hold watcher: cannot read %s: %s", ",".join(names), error)
                continue
            for wake, version in waiters:
                if version != current:
                    wake.set()
