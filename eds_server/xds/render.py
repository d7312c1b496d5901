"""Registry state -> ClusterLoadAssignment, in the JSON form of Envoy's protos.

The assignment rendered here is canonical (hosts and localities in a fixed
order, every field explicit), and a service's version is a hash of it: the
version changes exactly when what Envoy would receive changes, and every
worker and replica computes the same one.
"""

from __future__ import annotations

import hashlib
import re
import socket
from collections import defaultdict
from typing import Any

import orjson

from ..model import Host, Service
from .resources import TYPE_URLS

VERSION_LENGTH = 16
# What every version looks like: the first VERSION_LENGTH hex digits of a SHA-256.
VERSION_PATTERN = re.compile(f"^[0-9a-f]{{{VERSION_LENGTH}}}$")


def _host_order(host: Host) -> tuple[int, bytes, int]:
    """IPv4 before IPv6, then by address and port. The packed address compares as its number does,
    and a 4-byte one sorts before any 16-byte one; `ipaddress` would cost more than the rest of a
    large service's rendering."""
    family = socket.AF_INET6 if ":" in host.ip_address else socket.AF_INET
    packed = socket.inet_pton(family, host.ip_address)
    return (len(packed), packed, host.port)


def _duration(seconds: float) -> str:
    """google.protobuf.Duration in its JSON form: `30s`, `1.5s`."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def lb_endpoint(host: Host) -> dict[str, Any]:
    endpoint: dict[str, Any] = {
        "address": {"socket_address": {"address": host.ip_address, "port_value": host.port}},
    }
    if host.hostname:
        endpoint["hostname"] = host.hostname
    rendered: dict[str, Any] = {
        "endpoint": endpoint,
        "health_status": host.health_status,
        "load_balancing_weight": host.load_balancing_weight,
    }
    lb_metadata = dict(host.metadata)
    if host.canary:
        lb_metadata["canary"] = True
    if lb_metadata:
        rendered["metadata"] = {"filter_metadata": {"envoy.lb": lb_metadata}}
    return rendered


def assignment(name: str, service: Service | None) -> dict[str, Any]:
    """The ClusterLoadAssignment for `name`; no service renders as one with no endpoints
    (an empty resource list would make Envoy keep its old ones: docs/PROTOCOL.md#what-envoy-keeps)."""
    groups: dict[tuple[int, tuple[str, str, str]], list[Host]] = defaultdict(list)
    for host in service.hosts if service else ():
        groups[(host.priority, host.locality)].append(host)
    endpoints = []
    for (priority, (region, zone, sub_zone)), hosts in sorted(groups.items()):
        group: dict[str, Any] = {}
        locality = {k: v for k, v in (("region", region), ("zone", zone), ("sub_zone", sub_zone)) if v}
        if locality:
            group["locality"] = locality
        group["lb_endpoints"] = [lb_endpoint(h) for h in sorted(hosts, key=_host_order)]
        group["priority"] = priority
        endpoints.append(group)
    rendered: dict[str, Any] = {"cluster_name": name, "endpoints": endpoints}
    policy = service.policy if service else None
    if policy is not None:
        out: dict[str, Any] = {}
        if policy.overprovisioning_factor is not None:
            out["overprovisioning_factor"] = policy.overprovisioning_factor
        if policy.endpoint_stale_after is not None:
            out["endpoint_stale_after"] = _duration(policy.endpoint_stale_after)
        rendered["policy"] = out
    return rendered


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:VERSION_LENGTH]


def version_of(name: str, service: Service | None) -> str:
    """The version of what Envoy receives for `name`: a hash of the canonical assignment."""
    return _digest(orjson.dumps(assignment(name, service), option=orjson.OPT_SORT_KEYS))


def combined_version(versions: list[str]) -> str:
    """One version for a request naming several resources; a single one keeps its own."""
    return versions[0] if len(versions) == 1 else _digest(",".join(versions).encode())


def discovery_response(api: str, assignments: list[dict[str, Any]], version: str) -> bytes:
    type_url = TYPE_URLS[api]
    return orjson.dumps(
        {
            "version_info": version,
            "resources": [{"@type": type_url, **a} for a in assignments],
            "type_url": type_url,
            # REST has no use for the nonce but DiscoveryResponse carries one; the
            # version is unique per content, which lets the bytes be cached.
            "nonce": version,
        }
    )


def v1_registration(service: Service | None) -> dict[str, Any]:
    """The v1 SDS answer (`REST_LEGACY`): `{"hosts": [{"ip_address", "port", "tags"}]}`."""
    hosts = []
    for host in sorted(service.hosts, key=_host_order) if service else ():
        tags: dict[str, Any] = {"canary": host.canary, "load_balancing_weight": host.load_balancing_weight}
        if host.zone:
            tags["az"] = host.zone
        hosts.append({"ip_address": host.ip_address, "port": host.port, "tags": tags})
    return {"hosts": hosts}
