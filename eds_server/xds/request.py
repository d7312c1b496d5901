"""Reading a REST DiscoveryRequest: the few fields an answer needs, and every malformed body refused.

Reading is apart from answering (xds/core.py): a gRPC stream hands the core
the same `DiscoveryRequest`, read from protobuf instead of JSON.

Every value read is bounded (`bounded`): a node id, cluster, Envoy version or
version_info goes on into the clients view, the store and the log, and a
client may send a megabyte of any of them. A refusal names JSON types
(object, array, string, number, boolean, null) and never echoes a container.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import simdjson
import xxhash

from ..model import NAME_PATTERN, InvalidInput, Problem
from .resources import TYPE_URLS, V2, V3

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
JSON_TYPES = {str: "a string", dict: "an object", list: "an array"}
MAX_RESOURCE_NAMES = 64
# Lengths kept of what a poll says about its node (README, Limits and bad input). Node ids are
# host or pod names (an Istio sidecar's is ~100-300 characters); this server's versions are 16
# hex digits, another server's (an Envoy moved over) may be longer, and are kept long enough
# to be recognised.
MAX_NODE_ID_CHARS = 512
MAX_LABEL_CHARS = 256
# Length kept of a NACK's error_detail.message (gRPC): Envoy's own messages name the field and
# the rule in a few hundred characters; the clients view copies it into a row per rejected resource.
MAX_ERROR_MESSAGE_CHARS = 1024
# Problems reported for one malformed poll: the first ones say what is wrong.
MAX_PROBLEMS = 10


@dataclass(frozen=True)
class DiscoveryRequest:
    api: str
    names: tuple[str, ...]
    version_info: str | None
    node_id: str
    node_cluster: str
    envoy_version: str


def bounded(text: str, limit: int) -> str:
    """`text` when it fits in `limit` characters; else its start, a marker and a digest of the
    whole, `limit` characters in all: two long ids that share a start stay two ids."""
    if len(text) <= limit:
        return text
    marker = f"...[{len(text)} chars, xxh3 {xxhash.xxh3_64_hexdigest(text.encode('utf-8', 'surrogatepass'))}]"
    return text[: limit - len(marker)] + marker


def json_kind(value: Any) -> str:
    """The JSON type of a parsed value, as a refusal names it."""
    if isinstance(value, (simdjson.Object, dict)):
        return "object"
    if isinstance(value, (simdjson.Array, list)):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def _version_number(version: simdjson.Object, key: str) -> str:
    number = version.get(key, 0)
    return str(number) if isinstance(number, int) and not isinstance(number, bool) and 0 <= number < 2**32 else "?"


def _envoy_version(node: simdjson.Object) -> str:
    build = node.get("user_agent_build_version")
    version = build.get("version") if isinstance(build, simdjson.Object) else None
    if isinstance(version, simdjson.Object):
        return ".".join(_version_number(version, k) for k in ("major_number", "minor_number", "patch"))
    return bounded(node.get("build_version", ""), MAX_LABEL_CHARS)


class _Parsers:
    """simdjson parsers kept for reuse.

    A fresh parser allocates buffers several times the document's size on every
    poll; in a gunicorn worker that cost many times the parse itself
    (docs/PERFORMANCE.md#reading-the-poll-body). A parser must
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
                Problem(
                    prefix + bounded(key, MAX_LABEL_CHARS),
                    "...",
                    f"is not a field of {'Node' if prefix else 'DiscoveryRequest'}",
                )
            )
        elif not isinstance(value := data.get(key), PARSED_KINDS[kind]):
            problems.append(Problem(prefix + key, json_kind(value), f"must be {JSON_TYPES[kind]}"))
        if len(problems) == MAX_PROBLEMS:
            break
    return problems


class MalformedPoll(InvalidInput):
    """A poll refused: its problems, and its node's id when the body gave one (the log names the node)."""

    def __init__(self, problems: list[Problem], node_id: str | None):
        super().__init__(problems[:MAX_PROBLEMS])
        self.node_id = node_id


def _node_id(node: Any) -> str | None:
    node_id = node.get("id") if isinstance(node, simdjson.Object) else None
    return bounded(node_id, MAX_NODE_ID_CHARS) if isinstance(node_id, str) and node_id else None


def parse_request(api: str, body: bytes) -> DiscoveryRequest:
    """Read only what an answer needs; anything a DiscoveryRequest cannot be is InvalidInput.

    simdjson checks the whole body (structure, UTF-8, nesting depth) and hands
    back lazy proxies: only the few fields read below become Python objects,
    never the node's ~500 extensions. On Envoy's 77 KB poll that is several times
    cheaper than orjson.loads, let alone json.loads (each bench run measures the
    three: docs/PERFORMANCE.md#where-a-polls-time-goes-in-process-microseconds-per-call).
    """
    parser = _parsers.take()
    try:
        # No proxy outlives this call: `_read` returns plain values (or the
        # problems found, rather than raising from a frame that holds proxies).
        outcome = _read(api, parser, body)
    finally:
        _parsers.give_back(parser)
    if isinstance(outcome, MalformedPoll):
        raise outcome
    return outcome


def _read(api: str, parser: simdjson.Parser, body: bytes) -> DiscoveryRequest | MalformedPoll:
    try:
        data = parser.parse(body)
    except (ValueError, RuntimeError) as error:  # bad JSON, bad UTF-8, too deep
        return MalformedPoll([Problem("body", f"<{len(body)} bytes>", f"is not JSON: {error}")], None)
    if not isinstance(data, simdjson.Object):
        return MalformedPoll([Problem("body", json_kind(data), "must be an object (a DiscoveryRequest)")], None)
    node = data.get("node") or {}
    problems = _shape_problems(data, REQUEST_FIELDS[api], "")
    if isinstance(node, simdjson.Object):  # a node of another type is among the problems already
        problems += _shape_problems(node, NODE_FIELDS[api], "node.")
    if problems:
        return MalformedPoll(problems, _node_id(node))
    type_url = data.get("type_url") or TYPE_URLS[api]
    if type_url != TYPE_URLS[api]:
        shown = bounded(type_url, MAX_LABEL_CHARS)
        problems.append(Problem("type_url", shown, f"must be {TYPE_URLS[api]} on the {api} endpoint"))
    names = data.get("resource_names") or []
    if not names or len(names) > MAX_RESOURCE_NAMES:
        problems.append(
            Problem(
                "resource_names",
                f"<{len(names)} names>",
                f"must list 1-{MAX_RESOURCE_NAMES} service names (EDS has no wildcard)",
            )
        )
        names = []
    for index, name in enumerate(names):
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            shown = bounded(name, MAX_LABEL_CHARS) if isinstance(name, str) else json_kind(name)
            problems.append(Problem(f"resource_names[{index}]", shown, "must be 1-128 characters of A-Z a-z 0-9 . _ -"))
    if problems:
        return MalformedPoll(problems, _node_id(node))
    version_info = data.get("version_info")
    return DiscoveryRequest(
        api=api,
        names=tuple(dict.fromkeys(names)),
        version_info=bounded(version_info, MAX_LABEL_CHARS) if version_info else None,
        node_id=bounded(node.get("id") or "", MAX_NODE_ID_CHARS),
        node_cluster=bounded(node.get("cluster") or "", MAX_LABEL_CHARS),
        envoy_version=_envoy_version(node) if node else "",
    )


class ParsedPerConnection:
    """`parse_request`, skipped when a connection sends the very body it sent last.

    Envoy re-sends a byte-identical body on every poll until its version
    changes (docs/PROTOCOL.md#what-envoy-sends), and a 128-bit xxh3 digest of
    its 77 KB costs far less than validating them again
    (docs/PERFORMANCE.md#reading-the-poll-body). Only the
    connection's own previous body is compared, so even a contrived collision
    could only answer the poll sent last on that connection (behind a pooling
    proxy, maybe another client's: one it could have sent itself, as polls
    carry no credentials); any other body is parsed in full, and a malformed
    one still gets its 400. An entry goes with its connection (weak keys): one
    digest and one small request per open connection.
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
