"""Input bounds (README.md#security): sizes and counts are limited, with a 413/400 a person can act on."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eds_server import Settings, create_app
from eds_server.api.common import nests_deeper_than
from eds_server.api.state import app_state
from eds_server.store import open_store
from eds_server.xds import version_of

V3_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


@pytest.fixture
def small(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/registry.db", version_of)
    yield create_app(Settings(store="unused://", max_services=2, max_hosts_per_service=3), store=store).test_client()
    store.close()


def hosts(count):
    return [{"ip_address": "10.0.0.1", "port": 1000 + i} for i in range(count)]


def test_max_services_refuses_a_new_service_but_not_changes_to_existing_ones(small):
    assert small.put("/edsservice/a", json={"hosts": []}).status_code == 201
    assert small.post("/edsservice/b/hosts", json=hosts(1)[0]).status_code == 201
    for refused in (
        small.put("/edsservice/c", json={"hosts": []}),
        small.post("/edsservice/c", json={"hosts": []}),
        small.post("/edsservice/c/hosts", json=hosts(1)[0]),
    ):
        assert refused.status_code == 400
        message = refused.get_json()["message"]
        assert "maximum of 2 services" in message and "EDS_MAX_SERVICES" in message
        [problem] = refused.get_json()["errors"]  # every 400 lists its problems (README, Refusals)
        assert (problem["field"], problem["value"]) == ("name", "c") and "EDS_MAX_SERVICES" in problem["rule"]
    assert [s["name"] for s in small.get("/edsservice").get_json()] == ["a", "b"]
    assert small.put("/edsservice/a", json={"hosts": hosts(2)}).status_code == 200
    assert small.delete("/edsservice/b").status_code == 204
    assert small.put("/edsservice/c", json={"hosts": []}).status_code == 201


def test_max_hosts_per_service(small):
    assert small.put("/edsservice/a", json={"hosts": hosts(3)}).status_code == 201
    refused = small.post("/edsservice/a/hosts", json={"ip_address": "10.0.0.2", "port": 1})
    assert refused.status_code == 400 and "the limit is 3" in refused.get_json()["message"]
    refused = small.put("/edsservice/b", json={"hosts": hosts(4)})
    assert refused.status_code == 400 and "EDS_MAX_HOSTS_PER_SERVICE" in refused.get_json()["message"]
    [problem] = refused.get_json()["errors"]
    assert (problem["field"], problem["value"], problem["rule"]) == (
        "hosts",
        4,
        "must be at most 3 hosts (EDS_MAX_HOSTS_PER_SERVICE)",
    )
    assert [s["name"] for s in small.get("/edsservice").get_json()] == ["a"]


def test_metadata_size_is_bounded(client):
    host = {"ip_address": "10.0.0.1", "port": 80, "metadata": {"blob": "x" * 5000}}
    refused = client.put("/edsservice/a", json={"hosts": [host]})
    assert refused.status_code == 400
    [problem] = refused.get_json()["errors"]
    assert problem["field"] == "hosts[0].metadata" and "at most 4096 bytes" in problem["rule"]


def test_metadata_size_counts_the_utf_8_bytes_sent_not_escapes(client):
    accepted = {"ip_address": "10.0.0.1", "port": 80, "metadata": {"v": "é" * 2000}}  # 4,008 bytes as sent
    assert client.put("/edsservice/a", json={"hosts": [accepted]}).status_code == 201
    refused = {"ip_address": "10.0.0.1", "port": 80, "metadata": {"v": "é" * 2045}}  # 4,098 bytes
    [problem] = client.put("/edsservice/a", json={"hosts": [refused]}).get_json()["errors"]
    assert problem["value"] == "<4098 bytes>"


def test_the_envoy_poll_fits_the_default_body_limit_with_room(client, envoy_poll):
    body = json.dumps(envoy_poll["body"]).encode()
    assert 70_000 < len(body) and len(body) * 4 < Settings().max_body_bytes
    assert client.post("/v3/discovery:endpoints", data=body, content_type="application/json").status_code == 200


def test_an_oversized_poll_is_413_json(client, envoy_poll):
    body = dict(envoy_poll["body"])
    body["node"] = {**body["node"], "client_features": ["x" * 1000] * 1100}
    response = client.post("/v3/discovery:endpoints", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 413
    assert "max_body_bytes" in response.get_json()["message"]


POLL = {"node": {"id": "n", "cluster": "c"}, "resource_names": ["web"], "type_url": V3_TYPE}


@pytest.mark.parametrize(
    "body, field",
    [
        (b"", "body"),
        (b"\xff\xfe", "body"),
        (b"[" * 5000, "body"),
        (b'{"resource_names": ["web"]} trailing', "body"),
        (b"null", "body"),
        (b'"a string"', "body"),
        (json.dumps({**POLL, "node": []}).encode(), "node"),
        (json.dumps({**POLL, "node": "n"}).encode(), "node"),
        (json.dumps({**POLL, "node": {"id": 5}}).encode(), "node.id"),
        (json.dumps({**POLL, "node": {"id": "n", "colour": "red"}}).encode(), "node.colour"),
        (json.dumps({**POLL, "node": {"id": "n", "metadata": 5}}).encode(), "node.metadata"),
        (json.dumps({**POLL, "resource_names": "web"}).encode(), "resource_names"),
        (json.dumps({**POLL, "resource_names": []}).encode(), "resource_names"),
        (json.dumps({**POLL, "resource_names": [None]}).encode(), "resource_names[0]"),
        (json.dumps({**POLL, "resource_names": [{"name": "web"}]}).encode(), "resource_names[0]"),
        (json.dumps({**POLL, "resource_names": ["web"] * 65}).encode(), "resource_names"),
        (json.dumps({**POLL, "version_info": 7}).encode(), "version_info"),
        (json.dumps({**POLL, "response_nonce": []}).encode(), "response_nonce"),
        (json.dumps({**POLL, "error_detail": "NACK"}).encode(), "error_detail"),
        (
            json.dumps({**POLL, "type_url": "type.googleapis.com/envoy.api.v2.ClusterLoadAssignment"}).encode(),
            "type_url",
        ),
        (json.dumps({**POLL, "surprise": 1}).encode(), "surprise"),
        (b'{"resource_names": ["web"], "node": {"id": "n", "user_agent_build_version": {"version": 1e999}}}', "body"),
    ],
)
def test_a_malformed_poll_is_a_400_naming_the_field(client, body, field):
    response = client.post("/v3/discovery:endpoints", data=body, content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()
    assert error["message"] and field in {p["field"] for p in error["errors"]}


@pytest.mark.parametrize(
    "method, path",
    [
        ("patch", "/edsservice/web/hosts/10.0.0.1:%C2%B2"),  # "²" passes str.isdigit() but not int()
        ("delete", "/edsservice/web/hosts/10.0.0.1:%D9%A3"),  # an Arabic-Indic digit
        ("get", "/edsservice/web%0A"),  # "$" in a Python pattern also matches before a final newline
        ("put", "/edsservice/web%0A"),
        ("get", "/v1/registration/web%0A"),
    ],
)
def test_odd_characters_in_the_url_are_400_not_500(client, method, path):
    response = getattr(client, method)(path, json={"hosts": []})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["errors"]


def test_null_reads_as_not_given_in_every_optional_host_field(client):
    nulls = {field: None for field in ("tags", "health_status", "priority", "hostname", "metadata", "ttl")}
    response = client.put("/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80, **nulls}]})
    assert response.status_code == 201
    [host] = response.get_json()["hosts"]
    assert host["health_status"] == "HEALTHY" and host["priority"] == 0 and "ttl" not in host
    tags = {"canary": None, "load_balancing_weight": None, "az": None}
    response = client.post("/edsservice/web/hosts", json={"ip_address": "10.0.0.2", "port": 80, "tags": tags})
    assert response.status_code == 201
    assert response.get_json()["hosts"][1]["tags"] == {"canary": False, "load_balancing_weight": 1}


def test_a_duration_below_one_nanosecond_is_refused(client):
    # It would render as "0s", and Envoy rejects endpoint_stale_after 0.
    response = client.put("/edsservice/web", json={"hosts": [], "policy": {"endpoint_stale_after": 1e-10}})
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["field"] == "policy.endpoint_stale_after"


def test_an_invalid_patch_is_400_before_any_precondition(client):
    client.put("/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
    response = client.patch("/edsservice/web/hosts/10.0.0.1:80", json={"priority": -1}, headers={"If-Match": '"old"'})
    assert response.status_code == 400
    response = client.patch("/edsservice/ghost/hosts/10.0.0.1:80", json={"priority": 500})
    assert response.status_code == 400


def test_the_answer_cache_keeps_one_answer_per_request_however_many_writes(app, client):
    # Every answer is the current version, so an older one is dead weight: a worker
    # that kept each version would grow with every write (the soak measures it).
    discovery = app_state(app).core
    for port in range(1, 51):
        client.post("/edsservice/web/hosts", json={"ip_address": "10.0.0.1", "port": port})
        for names in (["web"], ["web", "api"]):
            body = {"node": {"id": "n"}, "resource_names": names, "type_url": V3_TYPE}
            assert client.post("/v3/discovery:endpoints", json=body).status_code == 200
    assert len(discovery._cache) == 2


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


@settings(max_examples=200, deadline=None)
@given(
    value=st.recursive(
        st.one_of(st.integers(), st.text(alphabet='[]{}"\\\\ aé', max_size=6)),
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text('[]{}"\\\\a', max_size=3), inner)),
        max_leaves=40,
    ),
    limit=st.integers(0, 12),
)
def test_the_body_depth_check_agrees_with_a_walk_of_the_parsed_body(value, limit):
    """Strings full of brackets, quotes and backslashes do not fool the bytes-only check."""
    raw = json.dumps(value, ensure_ascii=False).encode()
    assert nests_deeper_than(raw, limit) == (depth(value) > limit)
