"""Held polls: a poll that has nothing new to say waits for its services to change.

Each worker has one `Holds`: held polls register here and sleep, and one
watcher thread (a greenlet under gevent) waits on the store's change
notification and wakes every poll whose services' version moved, whichever
worker, replica or TTL sweep made the change. Propagation waits listen to the
same notification (`listening`): they are woken by every change, a batch of
clients-view rows included, and read the clients view again. The watcher
runs only while polls are held or waits listen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
        self._listeners: set[threading.Event] = set()  # one per propagation wait: woken by any change
        self._released: set[threading.Event] = set()  # held polls woken by a change, not yet out of `wait`
        self._watching = False
        self._stopping = False

    def wait(self, names: tuple[str, ...], version: str, seconds: float) -> None:
        """Return once `names` no longer has `version`, after `seconds`, or when the worker stops."""
        wake = threading.Event()
        with self._lock:
            if self._stopping:
                return
            self._waiting.setdefault(names, {})[wake] = version
            self._watch_while_needed()
        self.on_count(1)
        try:
            # A write may have landed between the caller's read and the registration.
            if self.current_version(names) == version:
                wake.wait(seconds)
        finally:
            self.on_count(-1)
            with self._lock:
                self._released.discard(wake)
                waiters = self._waiting[names]
                del waiters[wake]
                if not waiters:
                    del self._waiting[names]

    def releasing(self) -> bool:
        """Polls released by a change are still on their way out: under gevent each answers without
        yielding once it leaves `wait`, so when none is left, nearly every answer is written."""
        return bool(self._released)

    @contextmanager
    def listening(self) -> Iterator[Callable[[float], bool]]:
        """For a propagation wait: inside, `changed(seconds)` returns once the store signalled a change
        since its previous call (or since entering), or after `seconds`; it returns False at once,
        ever after, when the worker stops (the wait must then answer with what it knows)."""
        wake = threading.Event()
        with self._lock:
            self._listeners.add(wake)
            self._watch_while_needed()

        def changed(seconds: float) -> bool:
            if not self._stopping:
                wake.wait(seconds)
                wake.clear()
            return not self._stopping

        try:
            yield changed
        finally:
            with self._lock:
                self._listeners.discard(wake)

    def stop(self) -> None:
        """The worker stops: every held poll is answered now, and none is held from here on."""
        with self._lock:
            self._stopping = True
            wakes = [wake for waiters in self._waiting.values() for wake in waiters] + list(self._listeners)
        for wake in wakes:
            wake.set()

    def _watch_while_needed(self) -> None:
        """Start the watcher unless it runs; called under the lock."""
        if not self._watching:
            self._watching = True
            threading.Thread(target=self._watch, name="eds-hold-watcher", daemon=True).start()

    def _watch(self) -> None:
        while True:
            try:
                changed = self.store.wait_for_change(WATCH_TIMEOUT)
            except Exception as error:  # the store is away: held polls still end by their own timeout
                log.warning("hold watcher: %s; retrying in %ss", error, WATCH_TIMEOUT)
                threading.Event().wait(WATCH_TIMEOUT)
                changed = True
            with self._lock:
                if not (self._waiting or self._listeners) or self._stopping:
                    self._watching = False
                    return
                held = [(names, list(waiters.items())) for names, waiters in self._waiting.items()]
                listeners = list(self._listeners)
            if changed:
                for wake in listeners:
                    wake.set()
                self._release_changed(held)

    def _release_changed(self, held) -> None:
        for names, waiters in held:
            try:
                current = self.current_version(names)
            except Exception as error:
                log.warning("hold watcher: cannot read %s: %s", ",".join(names), error)
                continue
            with self._lock:  # only polls still held: one that timed out meanwhile would never leave `_released`
                still = self._waiting.get(names, {})
                released = [wake for wake, version in waiters if version != current and wake in still]
                self._released.update(released)
            for wake in released:
                wake.set()
