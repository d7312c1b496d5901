"""The registry API (README.md#the-registry-api): every call, every refusal, and that a refusal changes nothing."""

import json
import logging

import pytest
import yaml

from eds_server import Settings, create_app
from eds_server.api.state import app_state

HOST = {
    "ip_address": "10.0.0.5",
    "port": 8001,
    "tags": {"az": "us-central1-a", "canary": False, "load_balancing_weight": 50},
}


def registry_state(client):
    response = client.get("/edsservice")
    assert response.status_code == 200
    return response.get_json()


@pytest.fixture
def seeded(client):
    assert client.put("/edsservice/myservice", json={"hosts": [HOST]}).status_code == 201
    return client


def test_create_get_list_delete(client):
    created = client.post("/edsservice/web", json={"hosts": [HOST]})
    assert created.status_code == 201
    assert created.headers["Location"].endswith("/edsservice/web")
    assert created.get_json()["hosts"] == [{**HOST, "health_status": "HEALTHY", "priority": 0}]

    got = client.get("/edsservice/web")
    assert got.status_code == 200
    assert got.headers["ETag"] == created.headers["ETag"]
    assert got.get_json()["name"] == "web"
    assert len(got.get_json()["version"]) == 16

    listed = registry_state(client)
    assert [s["name"] for s in listed] == ["web"]

    assert client.delete("/edsservice/web").status_code == 204
    assert client.get("/edsservice/web").status_code == 404
    assert registry_state(client) == []


def test_post_to_an_existing_service_is_409(seeded):
    before = registry_state(seeded)
    response = seeded.post("/edsservice/myservice", json={"hosts": []})
    assert response.status_code == 409
    assert "already exists" in response.get_json()["message"]
    assert registry_state(seeded) == before


def test_put_creates_then_replaces_and_empties(client):
    assert client.put("/edsservice/svc", json={"hosts": [HOST]}).status_code == 201
    replaced = client.put("/edsservice/svc", json={"hosts": [{"ip_address": "[::1]", "port": 8002}]})
    assert replaced.status_code == 200
    assert [h["ip_address"] for h in replaced.get_json()["hosts"]] == ["::1"]
    emptied = client.put("/edsservice/svc", json={"hosts": []})
    assert emptied.status_code == 200 and emptied.get_json()["hosts"] == []


def test_missing_service_is_404_with_a_message(client):
    for response in (client.get("/edsservice/ghost"), client.delete("/edsservice/ghost")):
        assert response.status_code == 404
        assert "ghost" in response.get_json()["message"]


def test_policy_is_kept(client):
    body = {"hosts": [HOST], "policy": {"overprovisioning_factor": 140, "endpoint_stale_after": 30}}
    response = client.put("/edsservice/svc", json=body)
    assert response.get_json()["policy"] == body["policy"]
    # Host writes leave the service's policy alone.
    beat = client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.9", "port": 80})
    assert beat.get_json()["policy"] == body["policy"]
    patched = client.patch("/edsservice/svc/hosts/10.0.0.9:80", json={"priority": 1})
    assert patched.get_json()["policy"] == body["policy"]


BAD_WRITES = [
    # (what, method, path, raw body, field named in the error, part of the rule)
    ("not json", "PUT", "/edsservice/myservice", "hosts=1", "body", "line 1 column 1"),
    (
        "json with // comments",
        "POST",
        "/edsservice/other",
        '{\n  "hosts": [  //This field is deprecated.\n  ]\n}',
        "body",
        "line 2 column 15",
    ),
    ("empty body", "PUT", "/edsservice/myservice", "", "body", "not valid JSON"),
    ("not utf-8", "PUT", "/edsservice/myservice", b"\xff\xfe", "body", "UTF-8"),
    ("NaN", "PUT", "/edsservice/myservice", '{"hosts": [{"ip_address": "10.0.0.1", "port": NaN}]}', "body", "NaN"),
    ("deeply nested", "PUT", "/edsservice/myservice", "[" * 100_000, "body", "more than 64 deep"),
    ("nested past the body bound", "PUT", "/edsservice/myservice", "[" * 65 + "]" * 65, "body", "more than 64 deep"),
    ("a number past a double", "PUT", "/edsservice/myservice", '{"hosts": [], "x": 1e400}', "body", "infinite"),
    (
        "a lone surrogate",
        "PUT",
        "/edsservice/myservice",
        '{"hosts": [{"ip_address": "10.0.0.1", "port": 80, "tags": {"az": "\\ud800"}}]}',
        "body.hosts[0].tags.az",
        "lone surrogate",
    ),
    (
        "an integer past 2**53 in metadata",
        "PUT",
        "/edsservice/myservice",
        '{"hosts": [{"ip_address": "10.0.0.1", "port": 80, "metadata": {"n": 18446744073709551616}}]}',
        "hosts[0].metadata.n",
        "2**53",
    ),
    (
        "metadata nested past its bound",
        "PUT",
        "/edsservice/myservice",
        '{"hosts": [{"ip_address": "10.0.0.1", "port": 80, "metadata": {"m": ' + "[" * 40 + "]" * 40 + "}}]}",
        "hosts[0].metadata.m" + "[0]" * 31,
        "more than 32 deep",
    ),
    ("hosts not a list", "PUT", "/edsservice/myservice", '{"hosts": "10.0.0.1"}', "hosts", "list"),
    ("hosts missing", "PUT", "/edsservice/myservice", "{}", "hosts", "required"),
    (
        "port missing",
        "PUT",
        "/edsservice/myservice",
        '{"hosts": [{"ip_address": "10.0.0.1"}]}',
        "hosts[0].port",
        "required",
    ),
    (
        "port 0",
        "PUT",
        "/edsservice/myservice",
        '{"hosts": [{"ip_address": "10.0.0.1", "port": 0}]}',
        "hosts[0].port",
        "1-65535",
    ),
    (
        "port 70000",
        "PUT",
        "/edsservice/myservice",
        '{"hosts": [{"ip_address": "10.0.0.1", "port": 70000}]}',
        "hosts[0].port",
        "1-65535",
    ),
    (
        "port as string",
        "PUT",
        "/edsservice/myservice",
        '{"hosts": [{"ip_address": "10.0.0.1", "port": "80"}]}',
        "hosts[0].port",
        "integer",
    ),
    (
        "weight 0",
        "PUT",
        "/edsservice/myservice",
        '{"hosts": [{"ip_address": "10.0.0.1", "port": 80, "tags": {"load_balancing_weight": 0}}]}',
        "hosts[0].tags.load_balancing_weight",
        "Envoy rejects 0",
    ),
    (
        "a hostname",
        "PUT",
        "/edsservice/myservice",
        '{"hosts": [{"ip_address": "localhost", "port": 80}]}',
        "hosts[0].ip_address",
        "not host names",
    ),
    (
        "duplicate ip:port",
        "PUT",
        "/edsservice/myservice",
        '{"hosts": [{"ip_address": "10.0.0.1", "port": 80}, {"ip_address": "10.0.0.1", "port": 80}]}',
        "hosts[1]",
        "unique",
    ),
    ("bad service name", "PUT", "/edsservice/bad%20name", '{"hosts": []}', "name", "1-128 characters"),
    ("long service name", "PUT", "/edsservice/" + "x" * 129, '{"hosts": []}', "name", "1-128 characters"),
    (
        "bad host in upsert",
        "POST",
        "/edsservice/myservice/hosts",
        '{"ip_address": "10.0.0.1", "port": -1}',
        "body.port",
        "1-65535",
    ),
]


@pytest.mark.parametrize("what, method, path, body, field, rule", BAD_WRITES, ids=[b[0] for b in BAD_WRITES])
def test_bad_input_is_a_4xx_naming_field_and_rule_and_changes_nothing(seeded, what, method, path, body, field, rule):
    before = registry_state(seeded)
    response = seeded.open(path, method=method, data=body, content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()
    assert error["message"]
    problems = {p["field"]: p["rule"] for p in error["errors"]}
    assert field in problems, problems
    assert rule in problems[field]
    assert registry_state(seeded) == before


def test_huge_body_is_413_json_and_changes_nothing(seeded):
    before = registry_state(seeded)
    hosts = [{"ip_address": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", "port": 80} for i in range(40000)]
    response = seeded.put("/edsservice/myservice", data=json.dumps({"hosts": hosts}), content_type="application/json")
    assert response.status_code == 413
    assert "bytes" in response.get_json()["message"]
    assert registry_state(seeded) == before


def test_unknown_route_and_method_are_json(client):
    response = client.get("/no/such/thing")
    assert response.status_code == 404 and response.get_json()["message"]
    response = client.patch("/edsservice")
    assert response.status_code == 405 and response.get_json()["message"]


def test_host_calls(client):
    created = client.post("/edsservice/svc/hosts", json={"ip_address": "[::1]", "port": 8001, "ttl": 30})
    assert created.status_code == 201
    refreshed = client.post("/edsservice/svc/hosts", json={"ip_address": "::1", "port": 8001, "ttl": 30})
    assert refreshed.status_code == 200
    assert refreshed.get_json()["version"] == created.get_json()["version"]

    patched = client.patch(
        "/edsservice/svc/hosts/[::1]:8001", json={"health_status": "DRAINING", "tags": {"load_balancing_weight": 7}}
    )
    assert patched.status_code == 200
    host = patched.get_json()["hosts"][0]
    assert host["health_status"] == "DRAINING" and host["tags"]["load_balancing_weight"] == 7

    assert client.patch("/edsservice/svc/hosts/[::1]:9", json={}).status_code == 404
    assert client.patch("/edsservice/ghost/hosts/[::1]:8001", json={}).status_code == 404
    refused = client.patch("/edsservice/svc/hosts/[::1]:8001", json={"port": 9})
    assert refused.status_code == 400 and "cannot be patched" in refused.get_json()["message"]
    assert client.patch("/edsservice/svc/hosts/not-an-endpoint", json={}).status_code == 400

    assert client.delete("/edsservice/svc/hosts/[::1]:8001").status_code == 204
    assert client.delete("/edsservice/svc/hosts/[::1]:8001").status_code == 404
    assert client.get("/edsservice/svc").get_json()["hosts"] == []


def test_if_match(seeded):
    etag = seeded.get("/edsservice/myservice").headers["ETag"]
    ok = seeded.put("/edsservice/myservice", json={"hosts": []}, headers={"If-Match": etag})
    assert ok.status_code == 200
    stale = seeded.put("/edsservice/myservice", json={"hosts": [HOST]}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert "changed since you read it" in stale.get_json()["message"]
    assert seeded.get("/edsservice/myservice").get_json()["hosts"] == []


# -- host lifecycle: upsert (heartbeat), PATCH, DELETE, If-Match, ETag ---------------------------------------------

V6 = {"ip_address": "[::1]", "port": 8001, "ttl": 30}


def registry_of(client):
    return app_state(client.application).registry


def test_upsert_creates_the_service_then_the_host_then_refreshes(client):
    first = client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.1", "port": 80})
    assert first.status_code == 201
    assert first.headers["Location"].endswith("/edsservice/svc/hosts/10.0.0.1:80")
    second = client.post("/edsservice/svc/hosts", json=V6)
    assert second.status_code == 201
    # IPv6 written bracketed in the URL of the new host (percent-encoded brackets are the same URL).
    assert second.headers["Location"].endswith(("/hosts/[::1]:8001", "/hosts/%5B::1%5D:8001"))
    refreshed = client.post("/edsservice/svc/hosts", json={**V6, "ip_address": "::1"})
    assert refreshed.status_code == 200 and "Location" not in refreshed.headers
    assert refreshed.headers["ETag"] == second.headers["ETag"]
    assert refreshed.get_json()["version"] == second.get_json()["version"]
    assert [h["port"] for h in client.get("/edsservice/svc").get_json()["hosts"]] == [80, 8001]


def test_a_heartbeat_keeps_what_an_operator_patched_and_changes_what_it_names(client):
    registration = {"ip_address": "10.0.0.1", "port": 80, "ttl": 30, "tags": {"az": "a", "load_balancing_weight": 5}}
    client.post("/edsservice/svc/hosts", json=registration)
    client.patch("/edsservice/svc/hosts/10.0.0.1:80", json={"health_status": "DRAINING", "metadata": {"v": "2"}})

    beat = client.post("/edsservice/svc/hosts", json=registration)
    assert beat.status_code == 200
    [host] = beat.get_json()["hosts"]
    assert host["health_status"] == "DRAINING" and host["metadata"] == {"v": "2"}

    changed = client.post("/edsservice/svc/hosts", json={**registration, "tags": {"load_balancing_weight": 9}})
    [host] = changed.get_json()["hosts"]
    assert host["tags"] == {"az": "a", "canary": False, "load_balancing_weight": 9}
    assert changed.get_json()["version"] != beat.get_json()["version"]

    permanent = client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.1", "port": 80, "ttl": None})
    assert "ttl" not in permanent.get_json()["hosts"][0]


def test_heartbeats_hold_a_host_and_an_operator_patch_does_not(client, clock):
    registry = registry_of(client)
    client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.1", "port": 80, "ttl": 10})
    client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.2", "port": 80, "ttl": 10})
    clock.advance(8)
    client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.1", "port": 80})  # a heartbeat
    client.patch("/edsservice/svc/hosts/10.0.0.2:80", json={"health_status": "DRAINING"})  # not one
    clock.advance(3)
    [change] = registry.expire()
    assert [h.ip_address for h in change.after.hosts] == ["10.0.0.1"]

    # Changing the ttl itself does start a new deadline from now.
    client.patch("/edsservice/svc/hosts/10.0.0.1:80", json={"ttl": 100})
    clock.advance(50)
    assert registry.expire() == []
    # And removing it makes the host permanent.
    client.patch("/edsservice/svc/hosts/10.0.0.1:80", json={"ttl": None})
    clock.advance(10_000)
    assert registry.expire() == []


def test_patch_changes_each_field_and_null_removes(client):
    client.post("/edsservice/svc/hosts", json={**V6, "metadata": {"a": 1, "b": 2}, "hostname": "web-1"})
    patch = {
        "tags": {"load_balancing_weight": 7, "region": "eu", "az": "eu-1", "sub_zone": "r1", "canary": True},
        "health_status": "draining",
        "priority": 2,
        "metadata": {"a": None, "c": 3},
        "hostname": None,
        "ttl": 5,
    }
    response = client.patch("/edsservice/svc/hosts/[::1]:8001", json=patch)
    assert response.status_code == 200
    assert response.get_json()["hosts"] == [
        {
            "ip_address": "::1",
            "port": 8001,
            "tags": {"region": "eu", "az": "eu-1", "sub_zone": "r1", "canary": True, "load_balancing_weight": 7},
            "health_status": "DRAINING",
            "priority": 2,
            "metadata": {"b": 2, "c": 3},
            "ttl": 5,
            "expires_in": 5,  # a new ttl starts a new deadline
        }
    ]
    # The same host through percent-encoded brackets.
    again = client.patch("/edsservice/svc/hosts/%5B::1%5D:8001", json={"priority": 3})
    assert again.status_code == 200 and again.get_json()["hosts"][0]["priority"] == 3


BAD_HOST_CALLS = [
    # (what, method, path, body, status, field named, part of the message)
    ("upsert: not an object", "POST", "/edsservice/svc/hosts", "[1]", 400, "body", "JSON object"),
    ("upsert: port missing", "POST", "/edsservice/svc/hosts", '{"ip_address": "10.0.0.1"}', 400, "body.port", ""),
    (
        "upsert: a hostname",
        "POST",
        "/edsservice/svc/hosts",
        '{"ip_address": "db", "port": 1}',
        400,
        "body.ip_address",
        "",
    ),
    (
        "upsert: unknown field",
        "POST",
        "/edsservice/svc/hosts",
        '{"ip_address": "::1", "port": 1, "x": 1}',
        400,
        "body.x",
        "",
    ),
    (
        "upsert: bad service name",
        "POST",
        "/edsservice/a%20b/hosts",
        '{"ip_address": "::1", "port": 1}',
        400,
        "name",
        "",
    ),
    ("upsert: not json", "POST", "/edsservice/svc/hosts", "ip=1", 400, "body", "line 1 column 1"),
    ("patch: not an object", "PATCH", "/edsservice/svc/hosts/10.0.0.1:80", "[]", 400, "body", "JSON object"),
    (
        "patch: weight 0",
        "PATCH",
        "/edsservice/svc/hosts/10.0.0.1:80",
        '{"tags": {"load_balancing_weight": 0}}',
        400,
        "body.tags.load_balancing_weight",
        "",
    ),
    (
        "patch: bad health",
        "PATCH",
        "/edsservice/svc/hosts/10.0.0.1:80",
        '{"health_status": "SICK"}',
        400,
        "body.health_status",
        "",
    ),
    ("patch: ttl 0", "PATCH", "/edsservice/svc/hosts/10.0.0.1:80", '{"ttl": 0}', 400, "body.ttl", ""),
    (
        "patch: priority 999",
        "PATCH",
        "/edsservice/svc/hosts/10.0.0.1:80",
        '{"priority": 999}',
        400,
        "body.priority",
        "",
    ),
    ("patch: unknown field", "PATCH", "/edsservice/svc/hosts/10.0.0.1:80", '{"weight": 3}', 400, "body.weight", ""),
    (
        "patch: the address",
        "PATCH",
        "/edsservice/svc/hosts/10.0.0.1:80",
        '{"ip_address": "10.0.0.9"}',
        400,
        "body",
        "cannot be patched",
    ),
    ("patch: unbracketed IPv6", "PATCH", "/edsservice/svc/hosts/::1:8001", "{}", 400, "endpoint", "brackets"),
    ("patch: port 0 in URL", "PATCH", "/edsservice/svc/hosts/10.0.0.1:0", "{}", 400, "endpoint", "1-65535"),
    ("patch: a hostname in URL", "PATCH", "/edsservice/svc/hosts/db:80", "{}", 400, "endpoint", "not host names"),
    ("patch: no such host", "PATCH", "/edsservice/svc/hosts/10.0.0.2:80", "{}", 404, None, "no host 10.0.0.2:80"),
    (
        "patch: no such service",
        "PATCH",
        "/edsservice/ghost/hosts/10.0.0.1:80",
        "{}",
        404,
        None,
        "'ghost' does not exist",
    ),
    ("delete: no such host", "DELETE", "/edsservice/svc/hosts/[::2]:80", "", 404, None, "no host [::2]:80"),
    ("delete: no such service", "DELETE", "/edsservice/ghost/hosts/10.0.0.1:80", "", 404, None, "does not exist"),
    ("delete: not an endpoint", "DELETE", "/edsservice/svc/hosts/10.0.0.1", "", 400, "endpoint", "IP:PORT"),
]


@pytest.mark.parametrize(
    "what, method, path, body, status, field, message", BAD_HOST_CALLS, ids=[c[0] for c in BAD_HOST_CALLS]
)
def test_host_call_refusals_name_the_problem_and_change_nothing(
    client, what, method, path, body, status, field, message
):
    client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.1", "port": 80})
    before = registry_state(client)
    response = client.open(path, method=method, data=body, content_type="application/json")
    assert response.status_code == status
    error = response.get_json()
    assert message in error["message"]
    if field is not None:
        assert field in {p["field"] for p in error["errors"]}, error
    assert registry_state(client) == before


def test_upsert_beyond_the_host_limit_is_refused(tmp_path):
    client = create_app(Settings(store=f"sqlite:///{tmp_path}/r.db", max_hosts_per_service=2)).test_client()
    for port in (1, 2):
        assert client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.1", "port": port}).status_code == 201
    refused = client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.1", "port": 3})
    assert refused.status_code == 400 and "limit is 2" in refused.get_json()["message"]
    # A heartbeat of a host already there is no new host: still fine at the limit.
    assert client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.1", "port": 2}).status_code == 200


def test_deleting_a_host_answers_the_new_etag_and_keeps_the_service(client):
    client.post("/edsservice/svc/hosts", json=V6)
    client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.1", "port": 80})
    deleted = client.delete("/edsservice/svc/hosts/[::1]:8001")
    assert deleted.status_code == 204 and deleted.data == b""
    got = client.get("/edsservice/svc")
    assert deleted.headers["ETag"] == got.headers["ETag"]
    assert [h["ip_address"] for h in got.get_json()["hosts"]] == ["10.0.0.1"]
    assert client.delete("/edsservice/svc/hosts/10.0.0.1:80").status_code == 204
    assert client.get("/edsservice/svc").get_json()["hosts"] == []


# Every write on an existing service `svc` holding 10.0.0.1:80: (method, path, body, success status).
WRITES = [
    ("PUT", "/edsservice/svc", {"hosts": []}, 200),
    ("DELETE", "/edsservice/svc", None, 204),
    ("POST", "/edsservice/svc/hosts", {"ip_address": "10.0.0.2", "port": 80}, 201),
    ("PATCH", "/edsservice/svc/hosts/10.0.0.1:80", {"health_status": "DRAINING"}, 200),
    ("DELETE", "/edsservice/svc/hosts/10.0.0.1:80", None, 204),
]
WRITE_IDS = [f"{m} {p}" for m, p, _, _ in WRITES]


@pytest.fixture
def svc(client):
    return client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.1", "port": 80}).headers["ETag"]


@pytest.mark.parametrize("method, path, body, status", WRITES, ids=WRITE_IDS)
def test_a_stale_if_match_is_412_and_changes_nothing(client, svc, method, path, body, status):
    client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.3", "port": 80})  # someone else's write
    before = registry_state(client)
    response = client.open(path, method=method, json=body, headers={"If-Match": svc})
    assert response.status_code == 412
    assert "changed since you read it" in response.get_json()["message"]
    assert registry_state(client) == before


@pytest.mark.parametrize("method, path, body, status", WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("form", ["as read", "weak", "in a list", "star", "absent"])
def test_a_current_if_match_or_none_lets_the_write_through(client, svc, method, path, body, status, form):
    header = {"as read": svc, "weak": f"W/{svc}", "in a list": f'"0000", {svc}', "star": "*", "absent": None}[form]
    headers = {} if header is None else {"If-Match": header}
    response = client.open(path, method=method, json=body, headers=headers)
    assert response.status_code == status
    if path != "/edsservice/svc" or method != "DELETE":
        # Every answer naming a service state carries its ETag, the one a read gives next.
        assert response.headers["ETag"] == client.get("/edsservice/svc").headers["ETag"]


def test_if_match_on_a_service_that_does_not_exist_is_412(client):
    for method, path, body in [
        ("PUT", "/edsservice/new", {"hosts": []}),
        ("POST", "/edsservice/new", {"hosts": []}),
        ("POST", "/edsservice/new/hosts", {"ip_address": "10.0.0.1", "port": 80}),
    ]:
        response = client.open(path, method=method, json=body, headers={"If-Match": "*"})
        assert response.status_code == 412, (method, path)
    assert registry_state(client) == []


def test_heartbeats_keep_the_etag_so_an_operators_if_match_still_holds(client, svc):
    client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.1", "port": 80})
    response = client.patch("/edsservice/svc/hosts/10.0.0.1:80", json={"priority": 1}, headers={"If-Match": svc})
    assert response.status_code == 200


def test_export_is_the_seed_format(client):
    client.put(
        "/edsservice/web",
        json={
            "hosts": [{"ip_address": "[2001:db8::1]", "port": 8001, "ttl": 30, "metadata": {"v": "2"}}],
            "policy": {"overprovisioning_factor": 140},
        },
    )
    client.put("/edsservice/empty", json={"hosts": []})
    response = client.get("/edsservice?format=yaml")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/yaml")
    assert response.text.startswith("# eds-server registry export")
    assert yaml.safe_load(response.text) == {
        "services": {
            "empty": {"hosts": []},
            "web": {
                "hosts": [
                    {
                        "ip_address": "2001:db8::1",
                        "port": 8001,
                        "tags": {"canary": False, "load_balancing_weight": 1},
                        "health_status": "HEALTHY",
                        "priority": 0,
                        "metadata": {"v": "2"},
                        "ttl": 30,
                    }
                ],
                "policy": {"overprovisioning_factor": 140},
            },
        }
    }
    assert client.get("/edsservice?format=json").get_json() == registry_state(client)
    refused = client.get("/edsservice?format=xml")
    assert refused.status_code == 400 and refused.get_json()["errors"][0]["field"] == "format"


def test_changes_are_logged_at_info_and_bare_heartbeats_at_debug(client, caplog):
    caplog.set_level(logging.DEBUG, logger="eds_server.registry")
    host = {"ip_address": "10.0.0.1", "port": 80, "ttl": 30}
    client.post("/edsservice/svc/hosts", json=host)
    client.post("/edsservice/svc/hosts", json=host)
    client.patch("/edsservice/svc/hosts/10.0.0.1:80", json={"metadata": {"v": 1}})
    levels = [(r.levelname, r.getMessage().split(" ")[0]) for r in caplog.records if r.name == "eds_server.registry"]
    assert levels == [("INFO", "upsert-host"), ("DEBUG", "upsert-host"), ("INFO", "patch-host")]


def test_expires_in_counts_down_the_ttl_and_is_read_only(client, clock):
    client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.1", "port": 8001, "ttl": 30})
    client.post("/edsservice/svc/hosts", json={"ip_address": "10.0.0.2", "port": 8002})
    clock.advance(12.5)
    read = client.get("/edsservice/svc")
    hosts = read.get_json()["hosts"]
    assert hosts[0]["ttl"] == 30 and hosts[0]["expires_in"] == 17.5
    assert "expires_in" not in hosts[1]
    assert registry_state(client)[0]["hosts"] == hosts

    # What was read can be sent back as it is: expires_in is ignored, the deadline restarts from the ttl,
    # and neither the ETag nor the version changes (the deadline is not part of what Envoy gets).
    written = client.put("/edsservice/svc", json={"hosts": hosts})
    assert written.status_code == 200
    assert written.get_json()["hosts"][0]["expires_in"] == 30
    assert written.headers["ETag"] == read.headers["ETag"]
    assert written.get_json()["version"] == read.get_json()["version"]

    heartbeat = client.post(
        "/edsservice/svc/hosts", json={"ip_address": "10.0.0.1", "port": 8001, "ttl": 30, "expires_in": 9999}
    )
    assert heartbeat.status_code == 200 and heartbeat.get_json()["hosts"][0]["expires_in"] == 30
    patched = client.patch("/edsservice/svc/hosts/10.0.0.1:8001", json={"expires_in": 1})
    assert patched.status_code == 200 and patched.get_json()["hosts"][0]["expires_in"] == 30

    clock.advance(31)  # past the deadline, before a sweep removes the host
    assert client.get("/edsservice/svc").get_json()["hosts"][0]["expires_in"] == 0
