"""A service: a named set of hosts plus the load-assignment policy Envoy gets with them.

Every change to a service is a pure function here (`Service -> Service`), so a
store only has to apply one atomically; it never needs to know what changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import InvalidInput, NotFound, Problem, check
from .host import MAX_WEIGHT, Host, format_endpoint, parse_host, patched_host, seconds

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAX_OVERPROVISIONING_FACTOR = 2**32 - 1
MAX_STALE_AFTER_SECONDS = 365 * 24 * 3600
SERVICE_FIELDS = ("name", "hosts", "policy")
READ_ONLY_SERVICE_FIELDS = ("version", "etag")


def validate_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInput([Problem(field, name, "must be 1-128 characters of A-Z a-z 0-9 . _ -")])
    if name in (".", ".."):
        # As a path segment (/edsservice/..) clients resolve it away: no call could reach it.
        raise InvalidInput([Problem(field, name, "must not be . or .. (a URL path cannot name it)")])
    return name


@dataclass(frozen=True)
class Policy:
    """ClusterLoadAssignment.policy: how Envoy treats this service's endpoints."""

    overprovisioning_factor: int | None = None
    endpoint_stale_after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.overprovisioning_factor is not None:
            out["overprovisioning_factor"] = self.overprovisioning_factor
        if self.endpoint_stale_after is not None:
            stale = self.endpoint_stale_after
            out["endpoint_stale_after"] = int(stale) if stale.is_integer() else stale
        return out


def parse_policy(data: Any, where: str = "policy") -> Policy | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise InvalidInput([Problem(where, data, "must be a JSON object")])
    problems: list[Problem] = []
    for key in data:
        if key not in ("overprovisioning_factor", "endpoint_stale_after"):
            problems.append(
                Problem(
                    f"{where}.{key}",
                    data[key],
                    "is not a known field (known: overprovisioning_factor, endpoint_stale_after)",
                )
            )
    factor = data.get("overprovisioning_factor")
    if factor is not None and (
        not isinstance(factor, int) or isinstance(factor, bool) or not 1 <= factor <= MAX_OVERPROVISIONING_FACTOR
    ):
        problems.append(
            Problem(
                f"{where}.overprovisioning_factor",
                factor,
                f"must be an integer 1-{MAX_OVERPROVISIONING_FACTOR} (percent; Envoy's default is 140)",
            )
        )
    stale = seconds(
        data.get("endpoint_stale_after"), f"{where}.endpoint_stale_after", MAX_STALE_AFTER_SECONDS, problems
    )
    check(problems)
    policy = Policy(factor, stale)
    return policy if policy.to_dict() else None


@dataclass(frozen=True)
class Service:
    name: str
    hosts: tuple[Host, ...] = ()
    policy: Policy | None = field(default=None)

    def _as(self, host_form: Callable[[Host], dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "hosts": [host_form(h) for h in self.hosts]}
        if self.policy is not None:
            out["policy"] = self.policy.to_dict()
        return out

    def to_dict(self) -> dict[str, Any]:
        """The API representation, what `parse_service` reads back (and the ETag is computed from)."""
        return self._as(Host.to_dict)

    def to_view(self, now: float) -> dict[str, Any]:
        """What the API answers at `now`: each host with its `expires_in`."""
        return self._as(lambda host: host.to_view(now))

    def to_record(self) -> dict[str, Any]:
        """What a store keeps: each host with its deadline."""
        return self._as(Host.to_record)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Service:
        return cls(
            name=record["name"],
            hosts=tuple(Host.from_record(h) for h in record["hosts"]),
            policy=parse_policy(record.get("policy")),
        )

    @property
    def etag(self) -> str:
        """Names this state of the service as the API shows it (heartbeats keep it)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:20]

    @property
    def next_expiry(self) -> float | None:
        deadlines = [h.expires_at for h in self.hosts if h.expires_at is not None]
        return min(deadlines) if deadlines else None

    def host(self, key: tuple[str, int]) -> Host:
        for host in self.hosts:
            if host.key == key:
                return host
        raise NotFound(f"service {self.name!r} has no host {format_endpoint(*key)}")

    def live_hosts(self, now: float, writes_refused_at: float | None = None) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if not h.expired(now, writes_refused_at))

    def with_hosts(self, hosts: Iterable[Host]) -> Service:
        return replace(self, hosts=checked_hosts(tuple(hosts)))

    def with_host(self, host: Host) -> tuple[Service, bool]:
        """Add or replace the host with the same ip:port; also says whether it was new."""
        created = all(h.key != host.key for h in self.hosts)
        if created:
            return self.with_hosts(self.hosts + (host,)), True
        return self.with_hosts(host if h.key == host.key else h for h in self.hosts), False

    def with_heartbeat(self, host: Host, body: Mapping[str, Any], now: float) -> tuple[Service, bool]:
        """Register or refresh `host`, parsed from `body` (an upsert keyed by ip:port); also says whether it was new.

        A refresh restarts the host's ttl and changes only the fields the body
        names: a heartbeat that repeats the registration keeps what an operator
        changed meanwhile (a DRAINING status, a weight).
        """
        existing = next((h for h in self.hosts if h.key == host.key), None)
        updated = host if existing is None else patched_host(existing, body)
        return self.with_host(updated.stamped(now))

    def with_patched_host(self, key: tuple[str, int], patch: Any, now: float) -> Service:
        """The host changed by a merge patch. Its deadline moves only when its ttl does:
        an operator's edit is not a heartbeat, and must not keep a dead host alive."""
        current = self.host(key)
        updated = patched_host(current, patch)
        if updated.ttl == current.ttl:
            updated = replace(updated, expires_at=current.expires_at)
        else:
            updated = updated.stamped(now)
        return self.with_hosts(updated if h.key == key else h for h in self.hosts)

    def without_host(self, key: tuple[str, int]) -> Service:
        self.host(key)
        return replace(self, hosts=tuple(h for h in self.hosts if h.key != key))

    def without_expired(self, now: float, writes_refused_at: float | None = None) -> Service:
        return replace(self, hosts=self.live_hosts(now, writes_refused_at))


def checked_hosts(hosts: tuple[Host, ...], where: str = "hosts") -> tuple[Host, ...]:
    """Rules that span hosts: unique ip:port, and weights Envoy can add up per locality."""
    problems: list[Problem] = []
    seen: dict[tuple[str, int], int] = {}
    weights: dict[tuple[int, tuple[str, str, str]], int] = defaultdict(int)
    for index, host in enumerate(hosts):
        if host.key in seen:
            problems.append(
                Problem(
                    f"{where}[{index}]",
                    host.endpoint,
                    f"duplicates {where}[{seen[host.key]}]: ip_address:port must be unique",
                )
            )
        seen.setdefault(host.key, index)
        weights[(host.priority, host.locality)] += host.load_balancing_weight
    for (priority, locality), total in weights.items():
        if total > MAX_WEIGHT:
            problems.append(
                Problem(
                    where,
                    total,
                    f"sum of load_balancing_weight in locality {'/'.join(locality)} priority {priority} "
                    f"must not exceed {MAX_WEIGHT} (Envoy rejects it)",
                )
            )
    check(problems)
    return hosts


def parse_service(name: str, data: Any, now: float) -> Service:
    """A service from a request body `{"hosts": [...], "policy": {...}}`."""
    validate_name(name)
    if not isinstance(data, Mapping):
        raise InvalidInput([Problem("body", data, 'must be a JSON object such as {"hosts": [...]}')])
    problems: list[Problem] = []
    for key in data:
        if key not in SERVICE_FIELDS + READ_ONLY_SERVICE_FIELDS:
            problems.append(Problem(key, data[key], f"is not a known field (known: {', '.join(SERVICE_FIELDS)})"))
    if "name" in data and data["name"] != name:
        problems.append(
            Problem("name", data["name"], f"must match the service name in the URL ({name!r}) or be left out")
        )
    raw_hosts = data.get("hosts")
    if raw_hosts is None:
        problems.append(Problem("hosts", None, "is required (a list of hosts; [] for none)"))
        raw_hosts = []
    elif not isinstance(raw_hosts, list):
        problems.append(Problem("hosts", raw_hosts, "must be a list of host objects"))
        raw_hosts = []
    hosts: list[Host] = []
    for index, raw in enumerate(raw_hosts):
        try:
            hosts.append(parse_host(raw, f"hosts[{index}]").stamped(now))
        except InvalidInput as error:
            problems.extend(error.problems)
    policy = None
    try:
        policy = parse_policy(data.get("policy"))
    except InvalidInput as error:
        problems.extend(error.problems)
    check(problems)
    return Service(name, checked_hosts(tuple(hosts)), policy)


@dataclass(frozen=True)
class Expected:
    """What a conditional write expects the service to be, checked inside the store's atomic step."""

    etags: frozenset[str] = frozenset()  # one of these states
    exists: bool = False  # any state, as long as the service exists

    def met_by(self, service: Service | None) -> bool:
        return service is not None and (self.exists or service.etag in self.etags)
