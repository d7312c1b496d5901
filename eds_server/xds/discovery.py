"""REST discovery: one DiscoveryRequest in, one answer out (SPEC section 5).

An up-to-date poll costs one version read per requested name and no
rendering; a changed one is rendered once per (API, names, version) and
served from memory after that.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from ..model import InvalidInput, Problem, validate_name
from ..store import Store
from .render import TYPE_URLS, V2, V3, assignment, combined_version, discovery_response, version_of

# The fields of DiscoveryRequest and of its Node, with their JSON types, per API:
# v2 has no resource_locators nor Node.dynamic_parameters, v3 dropped Node.build_version.
_V2_REQUEST = {
    "version_info": str,
    "node": dict,
    "resource_names": list,
    "type_url": str,
    "response_nonce": str,
    "error_detail": dict,
}
_V2_NODE = {
    "id": str,
    "cluster": str,
    "metadata": dict,
    "locality": dict,
    "build_version": str,
    "user_agent_name": str,
    "user_agent_version": str,
    "user_agent_build_version": dict,
    "extensions": list,
    "client_features": list,
    "listening_addresses": list,
}
REQUEST_FIELDS = {V2: _V2_REQUEST, V3: {**_V2_REQUEST, "resource_locators": list}}
NODE_FIELDS = {
    V2: _V2_NODE,
    V3: {**{k: v for k, v in _V2_NODE.items() if k != "build_version"}, "dynamic_parameters": dict},
}
JSON_TYPES = {str: "a string", dict: "a JSON object", list: "a list"}
MAX_RESOURCE_NAMES = 64


@dataclass(frozen=True)
class DiscoveryRequest:
    api: str
    names: tuple[str, ...]
    version_info: str | None
    node_id: str
    node_cluster: str
    envoy_version: str


@dataclass(frozen=True)
class Answer:
    status: int  # 200 or 304
    body: bytes
    version: str


def _envoy_version(node: dict[str, Any]) -> str:
    build = node.get("user_agent_build_version")
    version = build.get("version") if isinstance(build, dict) else None
    if isinstance(version, dict):
        return ".".join(str(version.get(k, 0)) for k in ("major_number", "minor_number", "patch"))
    return str(node.get("build_version", ""))


def _shape_problems(data: dict[str, Any], fields: dict[str, type], prefix: str) -> list[Problem]:
    """Fields that DiscoveryRequest (or its node) does not have, or whose JSON type is wrong.

    Envoy never sends null and the API document does not allow it: null is refused too.
    """
    problems = []
    for key, value in data.items():
        kind = fields.get(key)
        if kind is None:
            problems.append(
                Problem(prefix + key, "...", f"is not a field of {'Node' if prefix else 'DiscoveryRequest'}")
            )
        elif not isinstance(value, kind):
            problems.append(Problem(prefix + key, type(value).__name__, f"must be {JSON_TYPES[kind]}"))
    return problems


def parse_request(api: str, body: bytes) -> DiscoveryRequest:
    """Read only what an answer needs; anything a DiscoveryRequest cannot be is InvalidInput."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput([Problem("body", f"<{len(body)} bytes>", f"is not JSON: {error}")]) from None
    if not isinstance(data, dict):
        raise InvalidInput([Problem("body", type(data).__name__, "must be a JSON object (a DiscoveryRequest)")])
    node = data.get("node") or {}
    problems = _shape_problems(data, REQUEST_FIELDS[api], "") or _shape_problems(node, NODE_FIELDS[api], "node.")
    if problems:
        raise InvalidInput(problems)
    type_url = data.get("type_url") or TYPE_URLS[api]
    if type_url != TYPE_URLS[api]:
        problems.append(Problem("type_url", type_url, f"must be {TYPE_URLS[api]} on the {api} endpoint"))
    version_info = data.get("version_info")
    names = data.get("resource_names")
    if not isinstance(names, list) or not names or len(names) > MAX_RESOURCE_NAMES:
        problems.append(
            Problem("resource_names", names, f"must list 1-{MAX_RESOURCE_NAMES} service names (EDS has no wildcard)")
        )
        names = []
    for index, name in enumerate(names):
        try:
            validate_name(name)
        except InvalidInput:
            problems.append(Problem(f"resource_names[{index}]", name, "must be 1-128 characters of A-Z a-z 0-9 . _ -"))
    node_id, cluster = node.get("id") or "", node.get("cluster") or ""
    if problems:
        raise InvalidInput(problems)
    return DiscoveryRequest(
        api=api,
        names=tuple(dict.fromkeys(names)),
        version_info=version_info or None,
        node_id=node_id,
        node_cluster=cluster,
        envoy_version=_envoy_version(node),
    )


@lru_cache(maxsize=4096)
def empty_version(name: str) -> str:
    return version_of(name, None)


class Discovery:
    """Answers polls for one worker, keeping the rendered bytes of the current answer to recent requests."""

    def __init__(self, store: Store, cache_size: int = 20000):
        self.store = store
        self.cache_size = cache_size
        # One answer per (API, names): the current one. An older version is never
        # served again (every answer is the current version), so keeping it would
        # only grow the worker's memory with every write.
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def current_version(self, names: tuple[str, ...]) -> str:
        return combined_version(self.store.version(n) or empty_version(n) for n in names)

    def answer(self, request: DiscoveryRequest) -> Answer:
        version = self.current_version(request.names)
        # Never 304 a poll without version_info: Envoy holds nothing yet.
        if request.version_info is not None and request.version_info == version:
            return Answer(304, b"", version)
        key = (request.api, request.names)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == version:
                self._cache.move_to_end(key)
                return Answer(200, cached[1], version)
        return self._render(request)

    def _render(self, request: DiscoveryRequest) -> Answer:
        services = [(name, self.store.get(name)) for name in request.names]
        # The version is taken from the services actually read, not the one
        # compared above, so the cached bytes always match their key even
        # when a write lands in between.
        version = combined_version(version_of(name, service) for name, service in services)
        body = discovery_response(request.api, [assignment(name, service) for name, service in services], version)
        with self._lock:
            self._cache[(request.api, request.names)] = (version, body)
            self._cache.move_to_end((request.api, request.names))
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return Answer(200, body, version)
