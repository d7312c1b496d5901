"""`GET /edsservice/NAME/propagation` and `?wait=SECONDS` on writes, through the HTTP layer (Flask test client).

Envoys here are Envoy-shaped polls through the same app; the real Envoys are in tests/e2e/test_propagation.py.
"""

from __future__ import annotations

import pytest

from eds_server.api.state import app_state
from eds_server.store import StoreUnavailable
from eds_server.xds import version_of

from .test_ops import poll_body, samples

POLL = "/v3/discovery:endpoints"
HOST = {"ip_address": "10.0.0.1", "port": 80}
OTHER = {"ip_address": "10.0.0.2", "port": 80}


def follow(client, node: str, name: str = "web") -> str:
    """An Envoy that takes what it is sent: the version it holds afterwards."""
    version = client.post(POLL, json=poll_body(node, (name,))).get_json()["version_info"]
    assert client.post(POLL, json=poll_body(node, (name,), version)).status_code == 304
    return version


def test_a_service_nobody_polls_is_in_sync_at_once(client):
    version = client.put("/edsservice/web", json={"hosts": [HOST]}).get_json()["version"]
    answer = client.get("/edsservice/web/propagation", query_string={"wait": 30})
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["outcome"], body["version"], body["subscribed"], body["have_it"]) == ("in_sync", version, 0, 0)
    assert body["message"] == "no Envoy polls web: there is nothing to wait for"


def test_the_status_code_tells_in_sync_from_behind_and_the_body_names_who(client):
    client.put("/edsservice/web", json={"hosts": [HOST]})
    held = follow(client, "edge-1")
    follow(client, "edge-2")
    assert client.get("/edsservice/web/propagation").status_code == 200

    written = client.post("/edsservice/web/hosts", json=OTHER).get_json()["version"]
    client.post(POLL, json=poll_body("edge-1", ("web",), held))
    client.post(POLL, json=poll_body("edge-1", ("web",), written))  # edge-1 has it, edge-2 has not polled since
    answer = client.get("/edsservice/web/propagation", query_string={"version": written})
    assert answer.status_code == 504
    body = answer.get_json()
    assert (body["outcome"], body["have_it"], body["subscribed"], body["behind"]) == ("timed_out", 1, 2, ["edge-2"])
    assert [(e["node_id"], e["state"]) for e in body["envoys"]] == [("edge-1", "in_sync"), ("edge-2", "behind")]
    assert body["message"].startswith(f"1 of 2 Envoys polling web have version {written} or a later one after ")
    assert "behind: edge-2 (holds " in body["message"]


def test_a_write_with_wait_is_applied_even_when_the_wait_times_out(client):
    client.put("/edsservice/web", json={"hosts": [HOST]})
    follow(client, "edge-1")
    answer = client.post("/edsservice/web/hosts", json=OTHER, query_string={"wait": "0"})
    assert answer.status_code == 504
    body = answer.get_json()
    assert body["message"].startswith(f"the write was applied (version {body['version']}), but 0 of 1 Envoys")
    assert body["propagation"]["behind"] == ["edge-1"]
    assert answer.headers["ETag"] and answer.headers["Location"].endswith("/edsservice/web/hosts/10.0.0.2:80")
    assert len(client.get("/edsservice/web").get_json()["hosts"]) == 2
    # The write counts as what it was (201 created), and its time leaves the wait out.
    counted = samples(client.get("/metrics").get_data(as_text=True))
    assert counted[("eds_writes_total", (("operation", "upsert-host"), ("outcome", "201")))] == 1
    assert ("eds_writes_total", (("operation", "upsert-host"), ("outcome", "504"))) not in counted


def test_a_write_whose_wait_cannot_read_the_clients_view_says_it_was_applied(client, monkeypatch):
    def away():
        raise StoreUnavailable("the store is away")

    monkeypatch.setattr(app_state(client.application).registry.store, "clients", away)
    answer = client.put("/edsservice/web", json={"hosts": [HOST]}, query_string={"wait": 1})
    assert answer.status_code == 503
    version = answer.get_json()["version"]
    assert answer.get_json()["message"] == (
        f"the write was applied (version {version}), but whether it reached every Envoy is not known: the store is away"
    )
    assert client.get("/edsservice/web").get_json()["version"] == version


def test_a_write_with_wait_answers_its_own_status_once_in_sync(client):
    answer = client.put("/edsservice/web", json={"hosts": [HOST]}, query_string={"wait": "2.5"})
    assert answer.status_code == 201
    body = answer.get_json()
    assert (body["hosts"][0]["ip_address"], body["propagation"]["outcome"]) == ("10.0.0.1", "in_sync")
    assert body["propagation"]["version"] == body["version"]
    assert "message" not in body


def test_a_rejecting_envoy_makes_the_wait_answer_502_at_once_naming_it(client):
    old = client.put("/edsservice/web", json={"hosts": [HOST]}).get_json()["version"]
    follow(client, "edge-1")
    client.post(POLL, json=poll_body("edge-2", ("web",), old))
    current = client.post("/edsservice/web/hosts", json=OTHER).get_json()["version"]
    client.post(POLL, json=poll_body("edge-2", ("web",), old))  # sent the new version
    client.post(POLL, json=poll_body("edge-2", ("web",), old))  # and still reports the old one
    answer = client.get("/edsservice/web/propagation", query_string={"wait": 30})
    assert answer.status_code == 502
    body = answer.get_json()
    assert (body["outcome"], body["rejected"], body["behind"]) == ("rejected", ["edge-2"], ["edge-1"])
    assert body["waited"] < 30
    assert f"rejected by edge-2 (holds {old}, rejected {current})" in body["message"]


def test_deleting_with_wait_answers_the_version_of_no_endpoints(client):
    client.put("/edsservice/web", json={"hosts": [HOST]})
    answer = client.delete("/edsservice/web", query_string={"wait": 1})
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["name"], body["version"]) == ("web", version_of("web", None))
    assert body["propagation"]["outcome"] == "in_sync"
    # Envoys still asking for it are waited for: the service is known to the server through them.
    follow(client, "edge-1")
    assert client.get("/edsservice/web/propagation").status_code == 200


def test_removing_a_host_with_wait_answers_the_service(client):
    client.put("/edsservice/web", json={"hosts": [HOST, OTHER]})
    answer = client.delete("/edsservice/web/hosts/10.0.0.2:80", query_string={"wait": 1})
    assert answer.status_code == 200
    assert [h["ip_address"] for h in answer.get_json()["hosts"]] == ["10.0.0.1"]
    assert client.delete("/edsservice/web/hosts/10.0.0.1:80").status_code == 204  # without wait: as before


@pytest.mark.parametrize(
    "query, field",
    [
        ({"wait": "-1"}, "wait"),
        ({"wait": "121"}, "wait"),
        ({"wait": "1e9"}, "wait"),
        ({"wait": "soon"}, "wait"),
        ({"wait": "nan"}, "wait"),
        ({"wait": ""}, "wait"),
        ({"version": "not-a-version"}, "version"),
        ({"version": "0123456789ABCDEF"}, "version"),
        ({"version": "0123456789abcdef\n"}, "version"),
    ],
)
def test_bad_input_gets_400_naming_the_field(client, query, field):
    client.put("/edsservice/web", json={"hosts": [HOST]})
    answer = client.get("/edsservice/web/propagation", query_string=query)
    assert answer.status_code == 400
    [problem] = answer.get_json()["errors"]
    assert (problem["field"], problem["value"]) == (field, query[field])
    if field == "wait":
        assert problem["rule"] == "must be a number of seconds from 0 to 120 (this server's propagation_max_wait)"


def test_a_write_with_a_bad_wait_changes_nothing(client):
    client.put("/edsservice/web", json={"hosts": [HOST]})
    before = client.get("/edsservice/web").get_json()
    for method, path, body in (
        ("post", "/edsservice/web/hosts", OTHER),
        ("put", "/edsservice/web", {"hosts": []}),
        ("patch", "/edsservice/web/hosts/10.0.0.1:80", {"priority": 1}),
        ("delete", "/edsservice/web/hosts/10.0.0.1:80", None),
        ("delete", "/edsservice/web", None),
        ("post", "/edsservice/api", {"hosts": [HOST]}),
    ):
        answer = getattr(client, method)(path, json=body, query_string={"wait": "-5"})
        assert answer.status_code == 400, (method, path)
        assert answer.get_json()["errors"][0]["field"] == "wait"
    assert client.get("/edsservice/web").get_json() == before
    assert client.get("/edsservice/api").status_code == 404


def test_an_unknown_service_is_404_and_a_bad_name_400(client):
    answer = client.get("/edsservice/nobody/propagation")
    assert answer.status_code == 404
    assert answer.get_json()["message"] == "service 'nobody' is not registered and no Envoy asks for it"
    assert client.get("/edsservice/bad%20name/propagation").status_code == 400


def test_the_wait_is_documented_on_every_write_and_the_route_in_swagger(client):
    spec = client.get("/swagger.json").get_json()
    writes = [
        (path, method)
        for path, operations in spec["paths"].items()
        if path.startswith("/edsservice")
        for method in operations
        if method in ("post", "put", "patch", "delete")
    ]
    assert len(writes) == 6
    for path, method in writes:
        operation = spec["paths"][path][method]
        assert "wait" in [p["name"] for p in operation["parameters"]], (path, method)
        assert {"502", "504"} <= set(operation["responses"]), (path, method)
    propagation = spec["paths"]["/edsservice/{name}/propagation"]["get"]
    assert {p["name"] for p in propagation["parameters"]} >= {"wait", "version"}
    assert set(propagation["responses"]) >= {"200", "400", "404", "502", "504"}
