"""Driving the discovery core in-process: polls as the transport hands them over, and writes to the registry."""

from __future__ import annotations

from eds_server.registry import Registry
from eds_server.xds import DiscoveryRequest


def poll(node: str = "edge-1", version: str | None = None, names: tuple[str, ...] = ("web",)) -> DiscoveryRequest:
    """A REST poll from an Envoy 1.40 `node` holding `version` of `names`."""
    return DiscoveryRequest("v3", names, version, node, "edge", "1.40.0")


def put(registry: Registry, *ports: int, name: str = "web") -> str:
    """`name` with a host on 10.0.0.1 at each of `ports`; its new version."""
    return registry.replace(name, {"hosts": [{"ip_address": "10.0.0.1", "port": p} for p in ports]}).version_after
