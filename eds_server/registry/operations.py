"""The registry's operations: what a write means, applied to a store in one atomic step.

Callers (the HTTP layer, the seed loader, the TTL sweeper) go through here, so
every change is validated, bounded and logged the same way whoever made it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..model import (
    AlreadyExists,
    Expected,
    Host,
    LimitExceeded,
    NotFound,
    Problem,
    Service,
    format_endpoint,
    parse_host,
    parse_service,
    validate_name,
)
from ..model.host import patched_host
from ..store import Change, Store

log = logging.getLogger("eds_server.registry")


@dataclass(frozen=True)
class Limits:
    max_hosts_per_service: int = 10_000
    max_services: int = 10_000


class Registry:
    def __init__(self, store: Store, limits: Limits = Limits()):
        self.store = store
        self.limits = limits

    # -- reads: what the API shows, from the same store the writes go to ----------
    def get(self, name: str) -> Service | None:
        return self.store.get(name)

    def services(self) -> list[Service]:
        return self.store.services()

    def size(self) -> tuple[int, int]:
        """(services, hosts)."""
        return self.store.size()

    def now(self) -> float:
        """The store's clock: what TTL deadlines are counted against."""
        return self.store.clock()

    def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve."""
        self.store.ping()

    def _bounded(self, service: Service) -> Service:
        if len(service.hosts) > self.limits.max_hosts_per_service:
            limit = self.limits.max_hosts_per_service
            raise LimitExceeded(
                f"service {service.name!r} would have {len(service.hosts)} hosts; "
                f"the limit is {limit} (EDS_MAX_HOSTS_PER_SERVICE)",
                Problem("hosts", len(service.hosts), f"must be at most {limit} hosts (EDS_MAX_HOSTS_PER_SERVICE)"),
            )
        return service

    def _within_limits(self, mutate):
        """`mutate`, refused when its result passes a limit.

        It runs inside the store's atomic step, so the count of services is the
        one the write commits against: concurrent creates cannot pass the limit.
        """

        def bounded(current: Service | None) -> Service | None:
            after = mutate(current)
            if after is None or after is current:
                return after
            if current is None and self.store.count() >= self.limits.max_services:
                limit = self.limits.max_services
                raise LimitExceeded(
                    f"service {after.name!r} cannot be created: the registry holds the maximum of "
                    f"{limit} services (EDS_MAX_SERVICES); nothing was changed",
                    Problem("name", after.name, f"is a new service, and the registry holds {limit} (EDS_MAX_SERVICES)"),
                )
            return self._bounded(after)

        return bounded

    def _apply(self, operation: str, name: str, mutate, expected: Expected | None, who: str) -> Change:
        change = self.store.update(name, self._within_limits(mutate), expected)
        if change.before is not change.after:
            # A heartbeat that only moves a deadline leaves the service equal (a
            # deadline is no part of a host's equality, nor of its ETag); at INFO
            # it would bury the changes among the refreshes.
            level = logging.INFO if change.visible or change.before != change.after else logging.DEBUG
            if log.isEnabledFor(level):  # describing a large service's change costs as much as the write
                log.log(level, "%s service=%s by=%s %s", operation, name, who, describe(change))
        return change

    def create(self, name: str, body: Any, expected: Expected | None = None, who: str = "-") -> Change:
        service = parse_service(name, body, self.store.clock())

        def create(current: Service | None) -> Service:
            if current is not None:
                raise AlreadyExists(f"service {name!r} already exists; use PUT to replace its hosts")
            return service

        return self._apply("create", name, create, expected, who)

    def replace(self, name: str, body: Any, expected: Expected | None = None, who: str = "-") -> Change:
        service = parse_service(name, body, self.store.clock())
        return self._apply("replace", name, lambda current: service, expected, who)

    def delete(self, name: str, expected: Expected | None = None, who: str = "-") -> Change:
        validate_name(name)

        def delete(current: Service | None) -> None:
            if current is None:
                raise NotFound(f"service {name!r} does not exist")
            return None

        return self._apply("delete", name, delete, expected, who)

    def upsert_host(
        self, name: str, body: Any, expected: Expected | None = None, who: str = "-"
    ) -> tuple[Change, Host, bool]:
        """Add or refresh one host (a heartbeat); creates the service when absent.

        Returns the change, the host as the body gave it, and whether it is new.
        """
        validate_name(name)
        host = parse_host(body, "body")
        now = self.store.clock()
        created = False

        def upsert(current: Service | None) -> Service:
            nonlocal created
            service, created = (current or Service(name)).with_heartbeat(host, body, now)
            return service

        return self._apply("upsert-host", name, upsert, expected, who), host, created

    def patch_host(
        self, name: str, key: tuple[str, int], patch: Any, expected: Expected | None = None, who: str = "-"
    ) -> Change:
        validate_name(name)
        # A patch that is invalid whatever the host refused before any precondition
        # or lookup: bad input is a 400 even when the precondition or the host is wrong too.
        patched_host(Host(*key), patch)
        now = self.store.clock()
        return self._apply(
            "patch-host",
            name,
            lambda current: _existing(name, current).with_patched_host(key, patch, now),
            expected,
            who,
        )

    def delete_host(self, name: str, key: tuple[str, int], expected: Expected | None = None, who: str = "-") -> Change:
        validate_name(name)
        return self._apply(
            "delete-host", name, lambda current: _existing(name, current).without_host(key), expected, who
        )

    def seed(self, services: Mapping[str, Any], who: str = "seed") -> list[Change]:
        """Create the services of a seed that do not exist yet; leave existing ones as they are.

        A restart with the same seed therefore changes nothing, and never undoes
        what was changed through the API since the service was first seeded.
        """
        now = self.store.clock()
        changes = []
        for name, body in services.items():
            service = parse_service(name, body, now)
            changes.append(self._apply("seed", name, lambda current, new=service: current or new, None, who))
        kept = [c.name for c in changes if c.before is not None]
        if kept:
            log.info("seed: kept %d existing service(s) as they are: %s", len(kept), ",".join(kept))
        return [c for c in changes if c.before is None]

    def expire(self) -> list[Change]:
        changes = self.store.expire()
        for change in changes:
            gone = {h.key for h in change.before.hosts} - {h.key for h in change.after.hosts}
            log.info(
                "expire service=%s hosts=%s version=%s->%s",
                change.name,
                ",".join(format_endpoint(*key) for key in sorted(gone)),
                change.version_before,
                change.version_after,
            )
        return changes


# Endpoints a change log line names per list (added, removed, changed); a longer list is counted.
LOGGED_ENDPOINTS = 10


def describe(change: Change) -> str:
    """What a change did, for its log line: hosts added, removed and changed, and the versions."""
    before = {h.key: h for h in change.before.hosts} if change.before else {}
    after = {h.key: h for h in change.after.hosts} if change.after else {}

    def endpoints(keys) -> str:
        keys = sorted(keys)
        named = ",".join(format_endpoint(*key) for key in keys[:LOGGED_ENDPOINTS]) or "-"
        return named if len(keys) <= LOGGED_ENDPOINTS else f"{named},...(+{len(keys) - LOGGED_ENDPOINTS} more)"

    changed = [k for k in before.keys() & after.keys() if before[k].to_dict() != after[k].to_dict()]
    return (
        f"hosts={len(before) if change.before else 'absent'}->{len(after) if change.after else 'absent'} "
        f"added={endpoints(after.keys() - before.keys())} removed={endpoints(before.keys() - after.keys())} "
        f"changed={endpoints(changed)} version={change.version_before or 'none'}->{change.version_after or 'none'}"
    )


def _existing(name: str, current: Service | None) -> Service:
    if current is None:
        raise NotFound(f"service {name!r} does not exist")
    return current
