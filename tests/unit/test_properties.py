"""Property tests against Envoy's own protos (xds-protos) and their validation rules (PGV).

1. Any service built from hosts the model accepts renders into a DiscoveryResponse
   whose ClusterLoadAssignment parses with Envoy's protos and breaks none of the
   `validate.rules` Envoy checks (read from the descriptors by tests/pgv.py).
2. Any body `parse_request` accepts is a DiscoveryRequest for Envoy's protos,
   and what it reads from it is what the protos read; anything else is InvalidInput.
"""

from __future__ import annotations

import json
import os

import pytest
from envoy.api.v2 import discovery_pb2 as discovery_v2
from envoy.api.v2 import eds_pb2 as eds_v2
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from eds_server.model import HEALTH_STATUSES, InvalidInput, parse_host, parse_service
from eds_server.model.host import MAX_PRIORITY, MAX_WEIGHT
from eds_server.store.base import dump_service, load_service
from eds_server.xds.render import assignment, discovery_response, version_of
from eds_server.xds.request import parse_request
from eds_server.xds.resources import TYPE_URLS, V2, V3
from tests.helpers.captured import load_fixture
from tests.helpers.pgv import constraints, violations

PROTOS = {
    V3: (discovery_pb2.DiscoveryResponse, discovery_pb2.DiscoveryRequest, endpoint_pb2.ClusterLoadAssignment),
    V2: (discovery_v2.DiscoveryResponse, discovery_v2.DiscoveryRequest, eds_v2.ClusterLoadAssignment),
}
PROPERTY = settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# What a body parsed by Python's json can hold, and a YAML seed more: integers of any size (past
# 2**53 a Struct rounds them, past 64 bits orjson refuses them), inf and nan (`1e400` reads as inf),
# lone surrogates (`"\ud800"`), and nesting past any renderer's recursion limit.
huge_integers = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(), st.integers(2**53 - 2, 2**70))
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
json_scalars = st.one_of(st.none(), st.booleans(), huge_integers, st.floats(), any_text)


def deeply_nested(depth: int, leaf):
    for _ in range(depth):
        leaf = {"k": leaf} if depth % 2 else [leaf]
    return leaf


json_values = st.one_of(
    st.recursive(
        json_scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(any_text, inner, max_size=3)),
        max_leaves=6,
    ),
    st.builds(deeply_nested, st.integers(1, 300), json_scalars),
)


def mostly(valid, *edges, garbage=json_values):
    """Valid values most of the time, the edges of the rule often, anything JSON sometimes."""
    return st.one_of(valid, valid, valid, st.sampled_from(edges), garbage) if edges else st.one_of(valid, garbage)


ip_addresses = mostly(
    st.ip_addresses().map(str),
    "[::1]",
    "::ffff:10.0.0.1",
    "0.0.0.0",
    "::",
    "fe80::1%eth0",
    "localhost",
    " 10.0.0.1 ",
    "10.0.0",
    "010.0.0.1",
    "[10.0.0.1]",
    "2001:db8::1",
    garbage=st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
ports = mostly(st.integers(1, 65535), 0, 1, 65535, 65536, -1, 80.0, "80", True)
weights = mostly(st.integers(1, 1000), 0, 1, MAX_WEIGHT, MAX_WEIGHT + 1, -1, 1.5, None)
labels = mostly(st.text(max_size=20), "", "us-central1-a", "é" * 256, "x" * 257, None, "\ud800", garbage=any_text)
tags = st.fixed_dictionaries(
    {},
    optional={
        "az": labels,
        "region": labels,
        "sub_zone": labels,
        "canary": mostly(st.booleans(), "true", 0, None),
        "load_balancing_weight": weights,
    },
)
hosts = st.fixed_dictionaries(
    {"ip_address": ip_addresses, "port": ports},
    optional={
        "tags": mostly(tags),
        "health_status": mostly(st.sampled_from(HEALTH_STATUSES), "healthy", "draining", "", "BOGUS"),
        "priority": mostly(st.integers(0, MAX_PRIORITY), -1, 0, MAX_PRIORITY, MAX_PRIORITY + 1, 2**32),
        "hostname": mostly(
            st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?", fullmatch=True), "", "-bad", "a" * 254, "é"
        ),
        "metadata": mostly(
            st.dictionaries(any_text, json_values, max_size=4),
            {},
            {"canary": True},
            {"k": "v" * 5000},
            {"n": 2**53},
            {"n": 2**53 + 1},
            {"n": float("inf")},
            {"k": deeply_nested(32, 1)},
            {"k": deeply_nested(31, 1)},
        ),
        "ttl": mostly(st.floats(0.001, 1e6), 0, -1, 1e300, float("inf"), "30"),
    },
)
policies = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "overprovisioning_factor": mostly(st.integers(1, 1000), 0, 1, 2**32 - 1, 2**32),
            "endpoint_stale_after": mostly(st.floats(0.001, 1e5), 0, 1e-10, 1e-9, 365 * 24 * 3600, -1),
        },
    ),
)
names = st.from_regex(r"[A-Za-z0-9._-]{1,128}", fullmatch=True)


def envoy_reads(api: str, body: bytes, name: str):
    """The answer as Envoy reads it: parsed with its protos, each resource unpacked, nothing unknown."""
    response_type, _, assignment_type = PROTOS[api]
    response = json_format.Parse(body, response_type())
    [resource] = response.resources
    cla = assignment_type()
    assert resource.Unpack(cla), resource.type_url
    assert cla.cluster_name == name
    return response, cla


@PROPERTY
@given(raw_hosts=st.lists(hosts, min_size=1, max_size=5), policy=policies, name=names)
def test_every_accepted_host_renders_into_an_assignment_envoy_accepts(raw_hosts, policy, name):
    accepted = {}
    for raw in raw_hosts:
        try:
            host = parse_host(raw)
        except InvalidInput:
            continue
        accepted.setdefault(host.key, host)
    event(f"{len(accepted)} of {len(raw_hosts)} hosts accepted")
    assume(accepted)
    try:
        # Through the API representation again, as a stored service is read back.
        body = {"hosts": [h.to_dict() for h in accepted.values()], "policy": policy}
        service = parse_service(name, body, now=0.0)
    except InvalidInput:
        event("policy refused")
        service = parse_service(name, {"hosts": body["hosts"]}, now=0.0)
    for api in (V3, V2):
        version = version_of(name, service)
        response, cla = envoy_reads(api, discovery_response(api, [assignment(name, service)], version), name)
        assert violations(response) == []
        assert violations(cla) == []
        endpoints = [lb for group in cla.endpoints for lb in group.lb_endpoints]
        assert sorted((lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value)
                      for lb in endpoints) == sorted(accepted)  # fmt: skip
        # Envoy reads metadata as a Struct (numbers are doubles): it gets exactly what was accepted.
        for lb in endpoints:
            host = accepted[(lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value)]
            if host.metadata:
                struct = json_format.MessageToDict(lb.metadata.filter_metadata["envoy.lb"])
                assert struct == {**host.metadata, **({"canary": True} if host.canary else {})}
    # Stored and read back, it is the same service (same ETag, same version); listed, it is strict JSON.
    stored = load_service(dump_service(service))
    assert (stored, stored.etag, version_of(name, stored)) == (service, service.etag, version_of(name, service))
    json.dumps(service.to_view(0.0), allow_nan=False).encode("utf-8")


def test_the_checker_finds_what_envoy_rejects():
    """The PGV checker is not vacuous: updates Envoy rejects (docs/PROTOCOL.md#what-makes-envoy-reject-an-update)
    break the descriptors' rules."""
    rejected = json_format.ParseDict(
        {
            "cluster_name": "web",
            "endpoints": [
                {
                    "priority": MAX_PRIORITY + 1,
                    "lb_endpoints": [
                        {
                            "endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 65536}}},
                            "load_balancing_weight": 0,
                        }
                    ],
                }
            ],
            "policy": {"overprovisioning_factor": 0},
        },
        endpoint_pb2.ClusterLoadAssignment(),
    )
    found = {v.split(":")[0] for v in violations(rejected)}
    assert found == {
        "endpoints[0].priority",
        "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value",
        "endpoints[0].lb_endpoints[0].load_balancing_weight",
        "policy.overprovisioning_factor",
    }


def test_the_model_bounds_are_envoys_own():
    """The host model's ranges, compared with the rules in Envoy's descriptors (docs/PROTOCOL.md#what-envoy-accepts)."""
    assert "lte: 65535" in constraints(address_pb2.SocketAddress.DESCRIPTOR)["port_value"]
    locality = constraints(endpoint_components_pb2.LocalityLbEndpoints.DESCRIPTOR)
    assert f"lte: {MAX_PRIORITY}" in locality["priority"]
    assert "gte: 1" in constraints(endpoint_components_pb2.LbEndpoint.DESCRIPTOR)["load_balancing_weight"]
    field = endpoint_components_pb2.LbEndpoint.DESCRIPTOR.fields_by_name["load_balancing_weight"]
    assert field.message_type.full_name == "google.protobuf.UInt32Value" and MAX_WEIGHT == 2**32 - 1


# -- discovery requests ---------------------------------------------------------------------------

FIXTURE_NODE = load_fixture("envoy-1.40-eds-poll-request.json")["body"]["node"]
# envoy.api.v2.core.Extension has no type_urls: a legacy Envoy's node is the same minus those.
NODE_FIELDS_OF = {
    V3: FIXTURE_NODE,
    V2: {k: v for k, v in FIXTURE_NODE.items() if k != "extensions"} | {"build_version": "legacy/1.17"},
}


def wrong_type(kind):
    """JSON values of another type than `kind`: what the shape check must refuse."""
    return json_scalars.filter(lambda v: v is not None and not isinstance(v, kind))


def request_bodies(api):
    # Fields that are read get any JSON; fields that are only type-checked get Envoy's own
    # contents or a value of the wrong JSON type (their inside is Envoy's business, not read).
    node = st.fixed_dictionaries(
        {},
        optional={
            "id": mostly(st.text(max_size=10)),
            "cluster": mostly(st.text(max_size=10)),
            **{
                key: st.one_of(st.just(value), wrong_type(type(value)))
                for key, value in NODE_FIELDS_OF[api].items()
                if key not in ("id", "cluster")
            },
        },
    )
    names_strategy = st.lists(st.one_of(names, json_values), max_size=5)
    fields = {
        "version_info": mostly(st.text(max_size=16)),
        "node": st.one_of(node, node, wrong_type(dict), st.none()),
        "resource_names": mostly(names_strategy),
        "type_url": mostly(st.sampled_from(sorted(TYPE_URLS.values())), ""),
        "response_nonce": mostly(st.text(max_size=8)),
        "error_detail": st.one_of(
            st.fixed_dictionaries(
                {}, optional={"code": st.integers(-(2**31), 2**31 - 1), "message": st.text(max_size=8)}
            ),
            wrong_type(dict),
        ),
    }
    if api == V3:
        fields["resource_locators"] = st.one_of(
            st.lists(st.fixed_dictionaries({"name": st.text(max_size=8)}), max_size=2), wrong_type(list)
        )
    known = st.fixed_dictionaries({}, optional=fields)
    unknown = st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=1)
    return st.one_of(known, known, known, st.builds(lambda a, b: {**b, **a}, known, unknown), json_values)


@pytest.mark.parametrize("api", [V3, V2])
def test_parse_request_accepts_only_what_envoys_protos_accept(api):
    _, request_type, _ = PROTOS[api]

    @PROPERTY
    @given(body=request_bodies(api))
    def check(body):
        raw = json.dumps(body).encode()
        try:
            parsed = parse_request(api, raw)
        except InvalidInput as error:
            assert error.problems
            event("refused")
            return
        event("accepted")
        message = json_format.Parse(raw, request_type())
        assert parsed.names == tuple(dict.fromkeys(message.resource_names))
        assert parsed.version_info == (message.version_info or None)
        assert (parsed.node_id, parsed.node_cluster) == (message.node.id, message.node.cluster)
        assert message.type_url in ("", TYPE_URLS[api])

    check()
