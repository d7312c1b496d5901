"""Held polls (long-poll): held while nothing changed, released by any change, never past the client's timeout."""

import json
import threading
import time

import requests

from scripts.processes import wait_until

V3_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ENVOY_TIMEOUT = {"x-envoy-expected-rq-timeout-ms": "30000"}  # what Envoy sends with request_timeout: 30s


def body(version=None, node="envoy-1", names=("web",)):
    data = {"node": {"id": node, "cluster": "edge"}, "resource_names": list(names), "type_url": V3_TYPE}
    if version is not None:
        data["version_info"] = version
    return data


class Background:
    """A poll running in a thread, so the test can act while it is held."""

    def __init__(self, send):
        self.response = None
        self.elapsed = None
        self._thread = threading.Thread(target=self._run, args=(send,), daemon=True)
        self._thread.start()

    def _run(self, send):
        started = time.monotonic()
        self.response = send()
        self.elapsed = time.monotonic() - started

    def result(self, within: float = 10):
        self._thread.join(within)
        assert not self._thread.is_alive(), f"the poll was not answered within {within}s"
        return self.response


def polls_held(metrics: str) -> float:
    """The eds_polls_held gauge of a /metrics text."""
    return next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("eds_polls_held "))


def held_now(client) -> float:
    return polls_held(client.get("/metrics").get_data(as_text=True))


def hold_polls(server, count: int) -> tuple[str, list[Background]]:
    """`count` polls from as many nodes, each holding the current version of `web`, held by the real server."""
    version = requests.put(
        f"{server.url}/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 8001}]}
    ).json()["version"]
    url = f"{server.url}/v3/discovery:endpoints"
    polls = [
        Background(lambda n=n: requests.post(url, json=body(version, node=f"n{n}"), headers=ENVOY_TIMEOUT, timeout=30))
        for n in range(count)
    ]
    wait_until(
        lambda: polls_held(requests.get(f"{server.url}/metrics").text) == count,
        timeout=10,
        what=f"{count} polls held",
    )
    return version, polls


def poll(client, version=None, headers=ENVOY_TIMEOUT, **fields):
    return client.post("/v3/discovery:endpoints", data=json.dumps(body(version, **fields)), headers=headers)


def register(client, *ports):
    response = client.put("/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": p} for p in ports]})
    return response.get_json()["version"]


def test_a_poll_holding_the_current_version_waits_for_the_change(app):
    client, writer = app.test_client(), app.test_client()
    version = register(client, 8001)
    held = Background(lambda: poll(client, version))
    wait_until(lambda: held_now(writer) == 1, timeout=5, what="the poll held")
    new = register(writer, 8001, 8002)
    answer = held.result()
    assert answer.status_code == 200 and answer.get_json()["version_info"] == new
    assert held_now(writer) == 0


def test_without_the_envoy_timeout_header_a_poll_is_never_held(client):
    version = register(client, 8001)
    for headers in ({}, {"x-envoy-expected-rq-timeout-ms": "nonsense"}, {"x-envoy-expected-rq-timeout-ms": "900"}):
        # 900 ms minus the 1 s margin leaves nothing to hold for.
        assert Background(lambda h=headers: poll(client, version, headers=h)).result(within=5).status_code == 304


def test_a_hold_ends_with_304_before_the_clients_timeout(client):
    version = register(client, 8001)
    # Envoy waits 1.3 s; minus the 1 s margin the server holds 0.3 s at most.
    held = Background(lambda: poll(client, version, headers={"x-envoy-expected-rq-timeout-ms": "1300"}))
    assert held.result(within=5).status_code == 304
    assert 0.25 <= held.elapsed < 1.3


def test_a_first_poll_and_an_old_version_are_answered_at_once(client):
    register(client, 8001)
    assert Background(lambda: poll(client)).result(within=5).status_code == 200
    assert Background(lambda: poll(client, "older", node="other")).result(within=5).status_code == 200


def test_a_node_that_rejected_the_current_version_is_held_not_answered_in_a_loop(app):
    client, writer = app.test_client(), app.test_client()
    version = register(client, 8001)
    sent = poll(client, "older")  # the node is sent the current version ...
    assert sent.get_json()["version_info"] == version
    held = Background(lambda: poll(client, "older"))  # ... and comes back with its old one: it rejected it
    wait_until(lambda: held_now(writer) == 1, timeout=5, what="the rejecting node's poll held")
    new = register(writer, 8002)
    answer = held.result()
    assert answer.status_code == 200 and answer.get_json()["version_info"] == new


def test_a_rejecting_node_is_sent_the_current_version_again_when_the_hold_ends(client):
    version = register(client, 8001)
    poll(client, "older")
    headers = {"x-envoy-expected-rq-timeout-ms": "1300"}
    again = Background(lambda: poll(client, "older", headers=headers)).result(within=5)
    assert again.status_code == 200 and again.get_json()["version_info"] == version


def test_held_polls_on_every_worker_are_released_by_one_write(eds_server):
    server = eds_server(workers=3)
    _, polls = hold_polls(server, 12)
    new = requests.post(f"{server.url}/edsservice/web/hosts", json={"ip_address": "10.0.0.1", "port": 8002}).json()
    answers = [p.result() for p in polls]
    assert {(a.status_code, a.json()["version_info"]) for a in answers} == {(200, new["version"])}


def test_ttl_expiry_releases_held_polls(eds_server):
    server = eds_server(workers=2)
    version = requests.put(
        f"{server.url}/edsservice/web",
        json={"hosts": [{"ip_address": "10.0.0.1", "port": 8001}, {"ip_address": "10.0.0.2", "port": 8002, "ttl": 1}]},
    ).json()["version"]
    held = Background(
        lambda: requests.post(
            f"{server.url}/v3/discovery:endpoints", json=body(version), headers=ENVOY_TIMEOUT, timeout=30
        )
    )
    answer = held.result(within=15)
    assert answer.status_code == 200
    [assignment] = answer.json()["resources"]
    assert [
        lb["endpoint"]["address"]["socket_address"]["port_value"] for lb in assignment["endpoints"][0]["lb_endpoints"]
    ] == [8001]


def test_graceful_shutdown_answers_held_polls_with_304(eds_server):
    server = eds_server(workers=2)
    _, polls = hold_polls(server, 4)
    server.stop()  # SIGTERM, then waits for the server to exit
    assert [p.result(within=15).status_code for p in polls] == [304] * 4


def test_a_write_on_one_replica_releases_the_polls_held_by_another(eds_server, redis_url):
    holding, writing = eds_server(store=redis_url), eds_server(store=redis_url)
    _, polls = hold_polls(holding, 3)
    new = requests.post(f"{writing.url}/edsservice/web/hosts", json={"ip_address": "10.0.0.1", "port": 8002}).json()
    answers = [p.result() for p in polls]
    assert {(a.status_code, a.json()["version_info"]) for a in answers} == {(200, new["version"])}
