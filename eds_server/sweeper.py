"""The TTL sweeper: removes hosts whose heartbeat stopped, even when no request arrives."""

from __future__ import annotations

import logging
import threading

from .registry import Registry
from .store import StoreUnavailable

log = logging.getLogger("eds_server.sweeper")


class Sweeper:
    """Runs `registry.expire()` every `interval` seconds in a daemon thread.

    Every worker runs one; the store re-checks each expiry inside its atomic
    step, so however many sweep at once, each host is removed exactly once.
    The first sweep comes one interval after start: the server swept once
    before its workers started (`server.start_up`).
    """

    def __init__(self, registry: Registry, interval: float):
        self.registry = registry
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eds-ttl-sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        skipping = False  # say so once per outage, not every interval
        while not self._stop.wait(self.interval):
            try:
                self.registry.expire()
                if skipping:
                    log.warning("TTL sweeps resumed: the store answers again")
                skipping = False
            except StoreUnavailable as error:
                if not skipping:
                    log.warning("TTL sweeps skipped until the store answers again: %s", error)
                skipping = True
            except Exception:  # a sweeper that dies silently would leave dead hosts in Envoy forever
                log.exception("TTL sweep failed; retrying in %ss", self.interval)
