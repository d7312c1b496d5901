"""The host model's rules, against hand-written cases from the registry API (README.md#the-registry-api)
and Envoy's limits (docs/PROTOCOL.md#what-envoy-accepts)."""

import datetime

import pytest

from eds_server.model import Host, InvalidInput, parse_endpoint, parse_host, parse_service


def nested_lists(depth):
    value = [1]
    for _ in range(depth - 1):
        value = [value]
    return value


def problems_of(call):
    with pytest.raises(InvalidInput) as caught:
        call()
    return {p.field: p.rule for p in caught.value.problems}


def test_minimal_host_gets_defaults():
    host = parse_host({"ip_address": "10.0.0.5", "port": 8001})
    assert host.to_dict() == {
        "ip_address": "10.0.0.5",
        "port": 8001,
        "tags": {"canary": False, "load_balancing_weight": 1},
        "health_status": "HEALTHY",
        "priority": 0,
    }


def test_full_host_round_trips():
    data = {
        "ip_address": "10.0.0.5",
        "port": 8001,
        "tags": {
            "az": "us-central1-a",
            "region": "us-central1",
            "sub_zone": "rack7",
            "canary": True,
            "load_balancing_weight": 50,
        },
        "health_status": "DRAINING",
        "priority": 2,
        "hostname": "web-1",
        "metadata": {"version": "v2"},
        "ttl": 30,
    }
    assert parse_host(data).to_dict() == data


@pytest.mark.parametrize(
    "given, normalised",
    [
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("[2001:DB8::5]", "2001:db8::5"),
        (" 10.0.0.5 ", "10.0.0.5"),
    ],
)
def test_ip_addresses_are_normalised(given, normalised):
    assert parse_host({"ip_address": given, "port": 1}).ip_address == normalised


@pytest.mark.parametrize(
    "host, field, rule_part",
    [
        ({"ip_address": "localhost", "port": 80}, "host.ip_address", "not host names"),
        ({"ip_address": "10.0.0.256", "port": 80}, "host.ip_address", "not an IP address"),
        ({"ip_address": "fe80::1%eth0", "port": 80}, "host.ip_address", "zone id"),
        ({"ip_address": 10, "port": 80}, "host.ip_address", "must be a string"),
        ({"port": 80}, "host.ip_address", "required"),
        ({"ip_address": "10.0.0.1"}, "host.port", "required"),
        ({"ip_address": "10.0.0.1", "port": 0}, "host.port", "1-65535"),
        ({"ip_address": "10.0.0.1", "port": 70000}, "host.port", "1-65535"),
        ({"ip_address": "10.0.0.1", "port": "80"}, "host.port", "integer"),
        ({"ip_address": "10.0.0.1", "port": True}, "host.port", "integer"),
        (
            {"ip_address": "10.0.0.1", "port": 1, "tags": {"load_balancing_weight": 0}},
            "host.tags.load_balancing_weight",
            "Envoy rejects 0",
        ),
        (
            {"ip_address": "10.0.0.1", "port": 1, "tags": {"load_balancing_weight": 2**32}},
            "host.tags.load_balancing_weight",
            "1-4294967295",
        ),
        ({"ip_address": "10.0.0.1", "port": 1, "tags": {"canary": "yes"}}, "host.tags.canary", "true or false"),
        ({"ip_address": "10.0.0.1", "port": 1, "tags": {"zone": "a"}}, "host.tags.zone", "not a known field"),
        ({"ip_address": "10.0.0.1", "port": 1, "tags": []}, "host.tags", "JSON object"),
        ({"ip_address": "10.0.0.1", "port": 1, "health_status": "OK"}, "host.health_status", "one of UNKNOWN"),
        ({"ip_address": "10.0.0.1", "port": 1, "priority": 129}, "host.priority", "0-128"),
        ({"ip_address": "10.0.0.1", "port": 1, "priority": -1}, "host.priority", "0-128"),
        ({"ip_address": "10.0.0.1", "port": 1, "hostname": "bad host"}, "host.hostname", "DNS name"),
        ({"ip_address": "10.0.0.1", "port": 1, "metadata": "v2"}, "host.metadata", "JSON object"),
        ({"ip_address": "10.0.0.1", "port": 1, "metadata": {"canary": True}}, "host.metadata.canary", "tags.canary"),
        ({"ip_address": "10.0.0.1", "port": 1, "metadata": {"k": "x" * 5000}}, "host.metadata", "at most 4096 bytes"),
        ({"ip_address": "10.0.0.1", "port": 1, "ttl": 0}, "host.ttl", "above 0"),
        ({"ip_address": "10.0.0.1", "port": 1, "ttl": "30s"}, "host.ttl", "number of seconds"),
        ({"ip_address": "10.0.0.1", "port": 1, "weight": 3}, "host.weight", "not a known field"),
        ([1, 2], "host", "JSON object"),
    ],
)
def test_bad_hosts_name_field_and_rule(host, field, rule_part):
    problems = problems_of(lambda: parse_host(host))
    assert field in problems, problems
    assert rule_part in problems[field]


def test_every_problem_is_reported_at_once():
    problems = problems_of(
        lambda: parse_host({"ip_address": "localhost", "port": 0, "tags": {"load_balancing_weight": 0}})
    )
    assert set(problems) == {"host.ip_address", "host.port", "host.tags.load_balancing_weight"}


def test_duplicate_ip_port_in_a_service_is_refused():
    problems = problems_of(
        lambda: parse_service(
            "svc", {"hosts": [{"ip_address": "10.0.0.1", "port": 80}, {"ip_address": "10.0.0.1", "port": 80}]}, now=0
        )
    )
    assert "hosts[1]" in problems and "unique" in problems["hosts[1]"]


def test_bracketed_and_plain_ipv6_are_the_same_host():
    problems = problems_of(
        lambda: parse_service(
            "svc", {"hosts": [{"ip_address": "[::1]", "port": 80}, {"ip_address": "::1", "port": 80}]}, now=0
        )
    )
    assert "hosts[1]" in problems


def test_weights_that_overflow_a_locality_are_refused():
    hosts = [{"ip_address": f"10.0.0.{i}", "port": 80, "tags": {"load_balancing_weight": 2**31}} for i in (1, 2)]
    problems = problems_of(lambda: parse_service("svc", {"hosts": hosts}, now=0))
    assert "must not exceed 4294967295" in problems["hosts"]


@pytest.mark.parametrize("name", ["", "a b", "a/b", "x" * 129, "é", ".", ".."])
def test_bad_service_names(name):
    assert "name" in problems_of(lambda: parse_service(name, {"hosts": []}, now=0))


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "hosts"),
        ({"hosts": {}}, "hosts"),
        ({"hosts": [], "extra": 1}, "extra"),
        ({"hosts": [], "name": "other"}, "name"),
        ({"hosts": [], "policy": {"overprovisioning_factor": 0}}, "policy.overprovisioning_factor"),
        ({"hosts": [], "policy": {"endpoint_stale_after": -1}}, "policy.endpoint_stale_after"),
        ([], "body"),
    ],
)
def test_bad_service_bodies(body, field):
    assert field in problems_of(lambda: parse_service("svc", body, now=0))


@pytest.mark.parametrize(
    "text, key",
    [
        ("10.0.0.5:8001", ("10.0.0.5", 8001)),
        ("[::1]:8001", ("::1", 8001)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
    ],
)
def test_endpoints_in_urls(text, key):
    assert parse_endpoint(text) == key


@pytest.mark.parametrize("text", ["::1:8001", "10.0.0.5", "10.0.0.5:0", "10.0.0.5:x", "host:80"])
def test_bad_endpoints_in_urls(text):
    with pytest.raises(InvalidInput):
        parse_endpoint(text)


def test_ttl_sets_a_deadline_that_is_not_part_of_the_host():
    host = parse_host({"ip_address": "10.0.0.1", "port": 1, "ttl": 5})
    stamped = host.stamped(100.0)
    assert stamped.expires_at == 105.0 and stamped == host
    assert stamped.expired(105.0) and not stamped.expired(104.9)
    assert parse_host({"ip_address": "10.0.0.1", "port": 1}).stamped(100.0).expires_at is None


def test_a_stored_record_reads_back_as_the_same_host_with_its_deadline():
    data = {
        "ip_address": "::1",
        "port": 8001,
        "hostname": "web-1",
        "metadata": {"version": "v2"},
        "ttl": 2.5,
        "tags": {"region": "r", "az": "z", "sub_zone": "s", "canary": True, "load_balancing_weight": 7},
        "health_status": "DRAINING",
        "priority": 3,
    }
    host = parse_host(data).stamped(100.0)
    back = Host.from_record(host.to_record())
    assert back == host and back.expires_at == 102.5 and back.to_dict() == data
    plain = parse_host({"ip_address": "10.0.0.1", "port": 1})
    assert Host.from_record(plain.to_record()) == plain and Host.from_record(plain.to_record()).expires_at is None


@pytest.mark.parametrize(
    "metadata, field, rule_part",
    [
        ({"n": 2**53 + 1}, "host.metadata.n", "within +-9007199254740992"),
        ({"n": -(2**64)}, "host.metadata.n", "doubles"),
        ({"n": [1, 10**400]}, "host.metadata.n[1]", "2**53"),
        ({"x": float("inf")}, "host.metadata.x", "finite"),
        ({"x": float("nan")}, "host.metadata.x", "finite"),
        ({"s": "a\ud800b"}, "host.metadata.s", "lone surrogate"),
        ({"\udfff": 1}, "host.metadata (a key)", "lone surrogate"),
        ({1: "a YAML key"}, "host.metadata.1", "string key"),
        ({"when": datetime.date(2026, 1, 1)}, "host.metadata.when", "not a date"),
        ({"set": {1, 2}}, "host.metadata.set", "not a set"),
        ({"d": {"e": nested_lists(31)}}, "host.metadata.d.e", "32 deep"),
    ],
)
def test_metadata_holds_only_what_json_orjson_and_envoys_struct_carry(metadata, field, rule_part):
    problems = problems_of(lambda: parse_host({"ip_address": "10.0.0.5", "port": 1, "metadata": metadata}))
    assert any(f.startswith(field) and rule_part in rule for f, rule in problems.items()), problems


def test_the_edges_of_what_metadata_may_hold_are_accepted():
    deepest = {"k": 1}
    for _ in range(30):  # 31 objects in metadata: 32 levels with metadata itself
        deepest = {"k": deepest}
    metadata = {"big": 2**53, "small": -(2**53), "tiny": 5e-324, "huge": 1.7976931348623157e308}
    metadata.update({"rtl": "\u05d0\U0001f600", "deep": deepest})
    assert parse_host({"ip_address": "10.0.0.5", "port": 1, "metadata": metadata}).metadata == metadata


def test_a_label_must_be_valid_unicode_text():
    problems = problems_of(lambda: parse_host({"ip_address": "10.0.0.5", "port": 1, "tags": {"az": "x\ud800"}}))
    assert "lone surrogate" in problems["host.tags.az"]


def test_a_refused_value_is_quoted_bounded_in_the_message():
    with pytest.raises(InvalidInput) as caught:
        parse_host({"ip_address": "x" * 100_000, "port": 10**300})
    assert len(caught.value.message) < 1000 and "..." in caught.value.message
