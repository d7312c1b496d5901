"""Which watched services changed: the store's change signal turned into names, for streams to wake on.

One `ChangeFeed` per gRPC process, with one watcher thread: it waits on the
store's change signal (`Store.wait_for_change`: a write through any worker
or replica, a TTL expiry by any sweeper), re-reads the version of every
service some stream watches, and hands the names whose version moved to
`on_changed` (the transport wakes the streams subscribed to them). Watching
more names than READ_ALL_ABOVE, it reads every stored version at once
instead: the registry is bounded, the names streams may subscribe to (most
of them, then, nobody registered) are not. Streams
read the versions themselves when woken; the feed only says whom to wake,
so one change costs one read per watched service, not one per stream.

A name the watcher has not seen before counts as changed: a stream that
subscribes registers first and reads after, so a write landing in between
is never missed.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

from ..store import Store

log = logging.getLogger("eds_server.feed")
# How long the watcher waits on the store before it looks whether it must stop.
WATCH_TIMEOUT = 1.0
# Watched names past which one read of every stored version costs less than a read per name
# (sqlite: 10,000 services in one query take about as long as a thousand queries of one).
READ_ALL_ABOVE = 1000
_UNSEEN = object()


class ChangeFeed:
    def __init__(self, store: Store, on_changed: Callable[[set[str]], None]):
        self.store = store
        self.on_changed = on_changed  # called from the watcher thread
        self._lock = threading.Lock()
        self._watched: Counter[str] = Counter()  # name -> streams watching it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eds-change-feed", daemon=True)

    def start(self) -> ChangeFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def watch(self, names) -> None:
        with self._lock:
            self._watched.update(names)

    def unwatch(self, names) -> None:
        with self._lock:
            self._watched.subtract(names)
            for name in [n for n in names if self._watched[n] <= 0]:
                del self._watched[name]

    def _run(self) -> None:
        seen: dict[str, str] = {}
        while not self._stop.is_set():
            try:
                changed = self.store.wait_for_change(WATCH_TIMEOUT)
            except Exception as error:  # the store is away: look at everything once it answers again
                log.warning("change feed: %s; retrying in %ss", error, WATCH_TIMEOUT)
                self._stop.wait(WATCH_TIMEOUT)
                seen.clear()
                changed = True
            if changed and not self._stop.is_set():
                self._look(seen)

    def _look(self, seen: dict[str, str]) -> None:
        with self._lock:
            names = list(self._watched)
        version_of = self.store.version
        if len(names) > READ_ALL_ABOVE:
            try:
                version_of = self.store.versions().get
            except Exception as error:  # each stream reads its names again, and fails alone if it must
                log.warning("change feed: cannot read the versions: %s", error)
                self.on_changed(set(names))
                return
        moved = set()
        for name in names:
            try:
                version = version_of(name)
            except Exception as error:
                log.warning("change feed: cannot read %s: %s", name, error)
                moved.add(name)
                continue
            if seen.get(name, _UNSEEN) != version:
                seen[name] = version
                moved.add(name)
        for name in set(seen) - set(names):
            del seen[name]
        if moved:
            self.on_changed(moved)
