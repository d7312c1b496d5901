"""An upstream host as operators describe it, validated and normalised.

The rules here are Envoy's own (an EDS address must be an IP literal, ports
fit in 16 bits, a weight of 0 is rejected) so that anything this module
accepts renders into an update Envoy accepts.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import InvalidInput, Problem, check
from .values import text_problem, value_problem

HEALTH_STATUSES = ("UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED")
LOCALITY_TAGS = ("region", "az", "sub_zone")
MAX_WEIGHT = 2**32 - 1  # LbEndpoint.load_balancing_weight is a uint32
MAX_PRIORITY = 128
MAX_TTL_SECONDS = 365 * 24 * 3600
# google.protobuf.Duration counts nanoseconds: less would render as 0s, which Envoy rejects.
MIN_SECONDS = 1e-9
MAX_LABEL_LENGTH = 256
MAX_METADATA_BYTES = 4096
# The keys Envoy's subset and canary logic read from filter_metadata["envoy.lb"];
# "canary" has its own tag, so metadata may not set it a second time.
RESERVED_METADATA_KEYS = ("canary",)
HOSTNAME_PATTERN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")

HOST_FIELDS = ("ip_address", "port", "tags", "health_status", "priority", "hostname", "metadata", "ttl")
# Fields the server reports but never takes from a request: accepted in a body
# (so a host read from the API can be sent back as it is) and ignored.
READ_ONLY_HOST_FIELDS = ("expires_at", "expires_in")
TAG_FIELDS = ("az", "region", "sub_zone", "canary", "load_balancing_weight")


@dataclass(frozen=True)
class Host:
    ip_address: str
    port: int
    region: str = ""
    zone: str = ""
    sub_zone: str = ""
    canary: bool = False
    load_balancing_weight: int = 1
    health_status: str = "HEALTHY"
    priority: int = 0
    hostname: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    ttl: float | None = None
    # A run-time deadline, not part of what the operator said: it changes on
    # every heartbeat while the host itself stays the same.
    expires_at: float | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, int]:
        return (self.ip_address, self.port)

    @property
    def endpoint(self) -> str:
        return format_endpoint(self.ip_address, self.port)

    @property
    def locality(self) -> tuple[str, str, str]:
        return (self.region, self.zone, self.sub_zone)

    def stamped(self, now: float) -> Host:
        """The host with its expiry deadline set from its ttl, counted from `now`."""
        return replace(self, expires_at=None if self.ttl is None else now + self.ttl)

    def expired(self, now: float, writes_refused_at: float | None = None) -> bool:
        """Its deadline passed, and it has had a whole ttl to heartbeat in since the store last refused a
        write (`writes_refused_at`): until then its heartbeats may have been refused, not stopped."""
        if self.expires_at is None or self.expires_at > now:
            return False
        return writes_refused_at is None or writes_refused_at + (self.ttl or 0) <= now

    def to_dict(self) -> dict[str, Any]:
        """The API representation: what `parse_host` reads back to an equal host."""
        tags: dict[str, Any] = {}
        for name, value in (("region", self.region), ("az", self.zone), ("sub_zone", self.sub_zone)):
            if value:
                tags[name] = value
        tags["canary"] = self.canary
        tags["load_balancing_weight"] = self.load_balancing_weight
        out: dict[str, Any] = {
            "ip_address": self.ip_address,
            "port": self.port,
            "tags": tags,
            "health_status": self.health_status,
            "priority": self.priority,
        }
        if self.hostname:
            out["hostname"] = self.hostname
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        if self.ttl is not None:
            out["ttl"] = int(self.ttl) if float(self.ttl).is_integer() else self.ttl
        return out

    def to_view(self, now: float) -> dict[str, Any]:
        """The representation as the API answers it at `now`: with the seconds left before the ttl runs out."""
        view = self.to_dict()
        if self.expires_at is not None:
            view["expires_in"] = round(max(0.0, self.expires_at - now), 1)
        return view

    def to_record(self) -> dict[str, Any]:
        """What a store keeps: the representation plus the run-time deadline."""
        record = self.to_dict()
        if self.expires_at is not None:
            record["expires_at"] = self.expires_at
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Host:
        """The host a store kept with `to_record`. It was validated when written, and the store
        is trusted (README, Security), so it is not validated again: validation was most
        of the cost of reading a large service (docs/PERFORMANCE.md#reading-stored-services)."""
        tags = record["tags"]
        ttl = record.get("ttl")
        return cls(
            ip_address=record["ip_address"],
            port=record["port"],
            region=tags.get("region", ""),
            zone=tags.get("az", ""),
            sub_zone=tags.get("sub_zone", ""),
            canary=tags["canary"],
            load_balancing_weight=tags["load_balancing_weight"],
            health_status=record["health_status"],
            priority=record["priority"],
            hostname=record.get("hostname", ""),
            metadata=record.get("metadata", {}),
            ttl=None if ttl is None else float(ttl),
            expires_at=record.get("expires_at"),
        )


def format_endpoint(ip_address: str, port: int) -> str:
    """`10.0.0.5:8001`, or `[::1]:8001` for IPv6, as written in host URLs."""
    return f"[{ip_address}]:{port}" if ":" in ip_address else f"{ip_address}:{port}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def normalise_ip(value: Any, where: str, problems: list[Problem]) -> str | None:
    if not isinstance(value, str):
        problems.append(Problem(where, value, "must be a string holding an IPv4 or IPv6 address"))
        return None
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        problems.append(
            Problem(
                where,
                value,
                "is not an IP address: Envoy accepts only IPv4 or IPv6 literals in EDS, "
                "not host names (resolve it first, or use a STRICT_DNS cluster)",
            )
        )
        return None
    if getattr(address, "scope_id", None):
        problems.append(Problem(where, value, "must not carry an IPv6 zone id (%...)"))
        return None
    return str(address)


def parse_endpoint(text: str) -> tuple[str, int]:
    """`IP:PORT` from a URL (`10.0.0.5:8001`, `[::1]:8001`) to a host key."""
    problems: list[Problem] = []
    ip_part, sep, port_part = text.rpartition(":")
    if not sep or (":" in ip_part and not ip_part.startswith("[")):
        raise InvalidInput(
            [Problem("endpoint", text, "must be IP:PORT, with IPv6 in brackets, for example [::1]:8001")]
        )
    ip = normalise_ip(ip_part, "endpoint", problems)
    # isdigit() alone lets through characters int() refuses, such as "²".
    port = int(port_part) if port_part.isascii() and port_part.isdigit() else None
    if port is None or not 1 <= port <= 65535:
        problems.append(Problem("endpoint", text, "must end in a port 1-65535"))
    check(problems)
    assert ip is not None and port is not None
    return ip, port


def seconds(value: Any, where: str, maximum: float, problems: list[Problem]) -> float | None:
    """An optional duration in seconds: a finite number of at least one nanosecond, at most `maximum`."""
    if value is None:
        return None
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))  # isfinite() of a huge int overflows
        and MIN_SECONDS <= value <= maximum
    ):
        return float(value)
    problems.append(
        Problem(where, value, f"must be a number of seconds above 0 (from {MIN_SECONDS}, 1 ns) and at most {maximum}")
    )
    return None


def _label(tags: Mapping[str, Any], name: str, where: str, problems: list[Problem]) -> str:
    value = tags.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_LABEL_LENGTH:
        problems.append(Problem(f"{where}.{name}", value, f"must be a string of at most {MAX_LABEL_LENGTH} characters"))
        return ""
    problem = text_problem(value, f"{where}.{name}")
    if problem is not None:
        problems.append(problem)
        return ""
    return value


def _given(data: Mapping[str, Any], name: str, default: Any) -> Any:
    """An optional field's value; null reads as not given, as in a merge patch."""
    value = data.get(name)
    return default if value is None else value


def _unknown_keys(data: Mapping[str, Any], allowed: tuple[str, ...], where: str, problems: list[Problem]) -> None:
    for key in data:
        if key not in allowed:
            problems.append(Problem(f"{where}.{key}", data[key], f"is not a known field (known: {', '.join(allowed)})"))


def parse_host(data: Any, where: str = "host") -> Host:
    """Validate one host object of the API; raise InvalidInput naming every broken rule."""
    if not isinstance(data, Mapping):
        raise InvalidInput([Problem(where, data, "must be a JSON object with at least ip_address and port")])
    problems: list[Problem] = []
    _unknown_keys(data, HOST_FIELDS + READ_ONLY_HOST_FIELDS, where, problems)

    if "ip_address" not in data:
        problems.append(Problem(f"{where}.ip_address", None, "is required"))
        ip = None
    else:
        ip = normalise_ip(data["ip_address"], f"{where}.ip_address", problems)

    port = data.get("port")
    if "port" not in data:
        problems.append(Problem(f"{where}.port", None, "is required"))
    elif not _is_int(port) or not 1 <= port <= 65535:
        problems.append(Problem(f"{where}.port", port, "must be an integer 1-65535"))

    tags = data.get("tags")
    tags = {} if tags is None else tags
    if not isinstance(tags, Mapping):
        problems.append(Problem(f"{where}.tags", tags, "must be a JSON object"))
        tags = {}
    _unknown_keys(tags, TAG_FIELDS, f"{where}.tags", problems)
    region = _label(tags, "region", f"{where}.tags", problems)
    zone = _label(tags, "az", f"{where}.tags", problems)
    sub_zone = _label(tags, "sub_zone", f"{where}.tags", problems)
    canary = _given(tags, "canary", False)
    if not isinstance(canary, bool):
        problems.append(Problem(f"{where}.tags.canary", canary, "must be true or false"))
    weight = _given(tags, "load_balancing_weight", 1)
    if not _is_int(weight) or not 1 <= weight <= MAX_WEIGHT:
        problems.append(
            Problem(
                f"{where}.tags.load_balancing_weight", weight, f"must be an integer 1-{MAX_WEIGHT} (Envoy rejects 0)"
            )
        )

    health = _given(data, "health_status", "HEALTHY")
    if not isinstance(health, str) or health.upper() not in HEALTH_STATUSES:
        problems.append(Problem(f"{where}.health_status", health, f"must be one of {', '.join(HEALTH_STATUSES)}"))
    else:
        health = health.upper()

    priority = _given(data, "priority", 0)
    if not _is_int(priority) or not 0 <= priority <= MAX_PRIORITY:
        problems.append(Problem(f"{where}.priority", priority, f"must be an integer 0-{MAX_PRIORITY}"))

    hostname = _given(data, "hostname", "")
    if not isinstance(hostname, str) or (hostname and not HOSTNAME_PATTERN.fullmatch(hostname)):
        problems.append(Problem(f"{where}.hostname", hostname, "must be a DNS name of at most 253 characters"))

    metadata = data.get("metadata")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, Mapping):
        problems.append(Problem(f"{where}.metadata", metadata, "must be a JSON object"))
        metadata = {}
    elif (problem := value_problem(dict(metadata), f"{where}.metadata")) is not None:
        problems.append(problem)
    else:
        for key in RESERVED_METADATA_KEYS:
            if key in metadata:
                problems.append(
                    Problem(f"{where}.metadata.{key}", metadata[key], f"is set by tags.{key}, not metadata")
                )
        # Counted as it is sent and stored: UTF-8, not the \u escapes json.dumps writes by default.
        size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
        if size > MAX_METADATA_BYTES:
            problems.append(
                Problem(f"{where}.metadata", f"<{size} bytes>", f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
            )

    ttl = seconds(data.get("ttl"), f"{where}.ttl", MAX_TTL_SECONDS, problems)

    check(problems)
    return Host(
        ip_address=ip,
        port=port,
        region=region,
        zone=zone,
        sub_zone=sub_zone,
        canary=canary,
        load_balancing_weight=weight,
        health_status=health,
        priority=priority,
        hostname=hostname,
        metadata=dict(metadata),
        ttl=ttl,
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge key by key, null removes a key."""
    if not isinstance(patch, Mapping):
        return patch
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def patched_host(host: Host, patch: Any) -> Host:
    """The host with a merge patch applied; its address and port cannot change."""
    if not isinstance(patch, Mapping):
        raise InvalidInput([Problem("body", patch, "must be a JSON object of the host fields to change")])
    updated = parse_host(merge_patch(host.to_dict(), patch), "body")
    if updated.key != host.key:
        raise InvalidInput(
            [
                Problem(
                    "body",
                    {k: patch[k] for k in ("ip_address", "port") if k in patch},
                    "ip_address and port identify the host and cannot be patched; add a new host instead",
                )
            ]
        )
    return updated
