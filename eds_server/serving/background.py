"""Work a worker does on its own, every so often, in a daemon thread (a greenlet under gevent)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..registry import Registry
from ..store import StoreUnavailable

log = logging.getLogger("eds_server.background")
# After an early wake-up, how long to let more of the same news arrive before the task runs:
# a fleet of Envoys taking one write all at once then costs a few runs, not one per Envoy.
GATHER_SECONDS = 0.01
WAIT_CHECK_INTERVAL = 0.05


class Periodic:
    """Calls `task` every `interval` seconds until stopped, and soon after `wake` is set (when given);
    a failure is logged and retried, never fatal. While `waits_while()` the task waits, at most
    `waits_at_most` seconds (under gevent a task blocks the whole worker while it runs).

    A task that died silently would leave its work undone for good (dead hosts
    kept in Envoy, a clients view that stops moving).
    """

    def __init__(
        self,
        name: str,
        interval: float,
        task: Callable[[], object],
        wake: threading.Event | None = None,
        waits_while: Callable[[], bool] = lambda: False,
        waits_at_most: float = 0.0,
    ):
        self.name = name
        self.interval = interval
        self.task = task
        self.waits_while = waits_while
        self.waits_at_most = waits_at_most
        self._stop = threading.Event()
        self._wake = wake or threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        skipping = False  # say so once per outage, not every interval
        while True:
            if self._wake.wait(self.interval):
                self._wake.clear()
                self._stop.wait(GATHER_SECONDS)
            waited_until = time.monotonic() + self.waits_at_most
            while self.waits_while() and time.monotonic() < waited_until and not self._stop.wait(WAIT_CHECK_INTERVAL):
                pass
            if self._stop.is_set():
                return
            try:
                self.task()
                if skipping:
                    log.warning("%s resumed: the store answers again", self.name)
                skipping = False
            except StoreUnavailable as error:
                if not skipping:
                    log.warning("%s skipped until the store answers again: %s", self.name, error)
                skipping = True
            except Exception:
                log.exception("%s failed; retrying in %ss", self.name, self.interval)


def ttl_sweeper(registry: Registry, interval: float) -> Periodic:
    """The TTL sweeper: runs `registry.expire()` every `interval` seconds, removing hosts whose heartbeat stopped.

    Every worker runs one; the store re-checks each expiry inside its atomic
    step, so however many sweep at once, each host is removed exactly once.
    The first sweep comes one interval after start: the server swept once
    before its workers started (`runner.start_up`).
    """
    return Periodic("eds-ttl-sweeper", interval, registry.expire)
