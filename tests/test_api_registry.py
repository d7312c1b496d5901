"""The registry API of SPEC section 3: every call, every refusal, and that a refusal changes nothing."""

import json

import pytest

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
    ("deeply nested", "PUT", "/edsservice/myservice", "[" * 100_000, "body", "too deeply"),
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
