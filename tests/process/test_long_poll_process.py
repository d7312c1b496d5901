"""Held polls across the workers of a real server and across replicas, and at shutdown."""

import requests

from tests.helpers.held_polls import ENVOY_TIMEOUT, Background, body, hold_polls


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
