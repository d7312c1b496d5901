"""The TTL sweeper: removes hosts whose heartbeat stopped, even when no request arrives."""

from __future__ import annotations

from .background import Periodic
from .registry import Registry


def sweeper(registry: Registry, interval: float) -> Periodic:
    """Runs `registry.expire()` every `interval` seconds.

    Every worker runs one; the store re-checks each expiry inside its atomic
    step, so however many sweep at once, each host is removed exactly once.
    The first sweep comes one interval after start: the server swept once
    before its workers started (`server.start_up`).
    """
    return Periodic("eds-ttl-sweeper", interval, registry.expire)
