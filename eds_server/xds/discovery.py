"""REST discovery: one DiscoveryRequest in, one answer out (SPEC section 5).

An up-to-date poll costs one version read per requested name and no
rendering; a changed one is rendered once per (API, names, version) and
served from memory after that.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import simdjson
import xxhash

from ..model import InvalidInput, Problem, validate_name
from ..store import Store
from .holds import Holds
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
    held: float = 0.0  # seconds the poll was held before this answer


def _plain(value: Any) -> Any:
    """A simdjson proxy as the Python value it stands for (used on small values only)."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _envoy_version(node: simdjson.Object) -> str:
    build = _plain(node.get("user_agent_build_version"))
    version = build.get("version") if isinstance(build, dict) else None
    if isinstance(version, dict):
        return ".".join(str(version.get(k, 0)) for k in ("major_number", "minor_number", "patch"))
    return str(_plain(node.get("build_version", "")))


class _Parsers:
    """simdjson parsers kept for reuse.

    A fresh parser allocates buffers several times the document's size on every
    poll; in a gunicorn worker that cost ~10x the parse itself. A parser must
    not parse again while proxies into its last document live, so each call
    takes one from here and gives it back only once its proxies are gone.
    """

    def __init__(self) -> None:
        self._idle: list[simdjson.Parser] = []  # list.pop and append are atomic: no lock

    def take(self) -> simdjson.Parser:
        try:
            return self._idle.pop()
        except IndexError:
            return simdjson.Parser()

    def give_back(self, parser: simdjson.Parser) -> None:
        self._idle.append(parser)


_parsers = _Parsers()


# What each JSON type of the field lists is, as simdjson hands it back (a proxy for containers).
PARSED_KINDS = {str: (str,), dict: (simdjson.Object, dict), list: (simdjson.Array, list)}


def _json_name(value: Any) -> str:
    if isinstance(value, simdjson.Object):
        return "dict"
    return "list" if isinstance(value, simdjson.Array) else type(value).__name__


def _shape_problems(data: simdjson.Object | dict, fields: dict[str, type], prefix: str) -> list[Problem]:
    """Fields that DiscoveryRequest (or its node) does not have, or whose JSON type is wrong.

    Envoy never sends null and the API document does not allow it: null is refused too.
    Values are looked at one by one (`get`), never all at once: `items()` would turn the
    node's ~500 extensions into Python objects.
    """
    problems = []
    for key in data.keys():
        kind = fields.get(key)
        if kind is None:
            problems.append(
                Problem(prefix + key, "...", f"is not a field of {'Node' if prefix else 'DiscoveryRequest'}")
            )
        elif not isinstance(value := data.get(key), PARSED_KINDS[kind]):
            problems.append(Problem(prefix + key, _json_name(value), f"must be {JSON_TYPES[kind]}"))
    return problems


def parse_request(api: str, body: bytes) -> DiscoveryRequest:
    """Read only what an answer needs; anything a DiscoveryRequest cannot be is InvalidInput.

    simdjson checks the whole body (structure, UTF-8, nesting depth) and hands
    back lazy proxies: only the few fields read below become Python objects,
    never the node's ~500 extensions. On Envoy's 77 KB poll that is ~25 us,
    against ~120 us for orjson.loads and ~250 us for json.loads (docs/PERFORMANCE.md).
    """
    parser = _parsers.take()
    try:
        # No proxy outlives this call: `_read` returns plain values (or the
        # problems found, rather than raising from a frame that holds proxies).
        outcome = _read(api, parser, body)
    finally:
        _parsers.give_back(parser)
    if isinstance(outcome, list):
        raise InvalidInput(outcome)
    return outcome


def _read(api: str, parser: simdjson.Parser, body: bytes) -> DiscoveryRequest | list[Problem]:
    try:
        data = parser.parse(body)
    except (ValueError, RuntimeError) as error:  # bad JSON, bad UTF-8, too deep
        return [Problem("body", f"<{len(body)} bytes>", f"is not JSON: {error}")]
    if not isinstance(data, simdjson.Object):
        return [Problem("body", _json_name(data), "must be a JSON object (a DiscoveryRequest)")]
    node = data.get("node") or {}
    problems = _shape_problems(data, REQUEST_FIELDS[api], "") or _shape_problems(node, NODE_FIELDS[api], "node.")
    if problems:
        return problems
    type_url = data.get("type_url") or TYPE_URLS[api]
    if type_url != TYPE_URLS[api]:
        problems.append(Problem("type_url", type_url, f"must be {TYPE_URLS[api]} on the {api} endpoint"))
    version_info = data.get("version_info")
    names = _plain(data.get("resource_names"))
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
        return problems
    return DiscoveryRequest(
        api=api,
        names=tuple(dict.fromkeys(names)),
        version_info=version_info or None,
        node_id=node_id,
        node_cluster=cluster,
        envoy_version=_envoy_version(node) if node else "",
    )


class ParsedPerConnection:
    """`parse_request`, skipped when a connection sends the very body it sent last.

    Envoy re-sends a byte-identical body on every poll until its version
    changes, and validating its 77 KB again costs ~30 us in-process (twice that
    in a busy worker). A 128-bit xxh3 digest of the body costs ~3 us. Only the
    connection's own previous body is compared, so even a contrived collision
    could only answer the poll sent last on that connection (behind a pooling
    proxy, maybe another client's: one it could have sent itself, as polls
    carry no credentials); any other body is parsed in full, and a malformed
    one still gets its 400. An entry goes with its connection (weak keys):
    ~200 bytes per open connection.
    """

    def __init__(self) -> None:
        self._last: weakref.WeakKeyDictionary[Any, tuple[str, bytes, DiscoveryRequest]] = weakref.WeakKeyDictionary()

    def parse(self, api: str, body: bytes, connection: Any = None) -> DiscoveryRequest:
        """`connection`: any object that lives as long as the client's connection (None: always parse)."""
        if connection is None:
            return parse_request(api, body)
        digest = xxhash.xxh3_128_digest(body)
        last = self._last.get(connection)
        if last is not None and last[0] == api and last[1] == digest:
            return last[2]
        request = parse_request(api, body)
        self._last[connection] = (api, digest, request)
        return request


@lru_cache(maxsize=4096)
def empty_version(name: str) -> str:
    return version_of(name, None)


class Discovery:
    """Answers polls for one worker, keeping the rendered bytes of the current answer to recent requests."""

    def __init__(self, store: Store, cache_size: int = 20000, on_held_count: Callable[[int], None] | None = None):
        self.store = store
        self.cache_size = cache_size
        # One answer per (API, names): the current one. An older version is never
        # served again (every answer is the current version), so keeping it would
        # only grow the worker's memory with every write.
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self.holds = Holds(store, self.current_version, *([on_held_count] if on_held_count else []))

    def current_version(self, names: tuple[str, ...]) -> str:
        return combined_version(self.store.version(n) or empty_version(n) for n in names)

    def answer(self, request: DiscoveryRequest, hold: float = 0.0, sent_version: str | None = None) -> Answer:
        """The answer to a poll; with `hold` > 0, a poll with nothing new is held up to that many seconds.

        Held: a poll that holds the current version (it would get 304), and a
        poll from a node that was already sent the current version but still
        reports another (it rejected it: answering at once would have it poll
        again at once, in a tight loop). Either is answered as soon as the
        version changes, else when the hold ends (304, or the current version
        re-sent to the node that rejected it).
        """
        version = self.current_version(request.names)
        held = 0.0
        if hold > 0 and request.version_info is not None and version in (request.version_info, sent_version):
            started = time.monotonic()
            self.holds.wait(request.names, version, hold)
            held = time.monotonic() - started
            version = self.current_version(request.names)
        # Never 304 a poll without version_info: Envoy holds nothing yet.
        if request.version_info is not None and request.version_info == version:
            return Answer(304, b"", version, held)
        key = (request.api, request.names)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == version:
                self._cache.move_to_end(key)
                return Answer(200, cached[1], version, held)
        return dataclasses.replace(self._render(request), held=held)

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
