"""A real Envoy 1.40 over gRPC: EDS state of the world and delta, ADS state of the world and delta.

The same operator story as over REST (tests/e2e/test_tutorial_through_envoy.py),
through the shipped gRPC bootstraps; every Envoy ends with update_rejected 0
(the envoy_for fixture checks it).
"""

import pytest
import requests

from scripts.envoy import GRPC_TRANSPORTS
from scripts.processes import wait_until
from tests.e2e.conftest import SERVICE, MyService

TAGS = {"az": "us-central1-a", "canary": False, "load_balancing_weight": 50}


@pytest.fixture(params=GRPC_TRANSPORTS)
def transport(request) -> str:
    return request.param


@pytest.fixture
def grpc_server(eds_server):
    return eds_server(grpc=True)


@pytest.fixture
def grpc_service(grpc_server) -> MyService:
    return MyService(grpc_server)


@pytest.fixture
def envoy(grpc_server, envoy_for, transport):
    return envoy_for(grpc_server, transport=transport)


def answered_by(envoy, name: str, timeout: float = 10) -> None:
    wait_until(lambda: envoy.get().text.strip() == name, timeout=timeout, what=f"traffic reaching {name}")


def grpc_rows(server) -> list[dict]:
    clients = requests.get(f"{server.url}/clients", params={"service": SERVICE}, timeout=5).json()["clients"]
    return [row for row in clients if row["transport"] == "grpc"]


def test_the_tutorial_sequence(envoy, grpc_service, upstreams):
    response = envoy.get()
    assert (response.status_code, response.text) == (503, "no healthy upstream")

    hello1, hello2 = upstreams("hello-world1"), upstreams("hello-world2")
    grpc_service.post(hello1.host(tags=TAGS))
    answered_by(envoy, "hello-world1")
    assert envoy.spread(10) == {"hello-world1": 10}

    grpc_service.put()
    envoy.wait_for_ports([])
    assert envoy.get().status_code == 503

    grpc_service.put(hello1.host(tags=TAGS), hello2.host(tags=TAGS))
    envoy.wait_for_ports([hello1.port, hello2.port])
    spread = envoy.spread(40)
    assert set(spread) == {"hello-world1", "hello-world2"} and min(spread.values()) >= 15, spread

    grpc_service.delete()
    envoy.wait_for_ports([])
    assert envoy.get().status_code == 503


def test_the_clients_view_shows_what_envoy_acked(envoy, grpc_server, grpc_service, upstreams, transport):
    grpc_service.put(upstreams("alpha").host())
    answered_by(envoy, "alpha")
    mode = {"GRPC": "eds-sotw", "DELTA_GRPC": "eds-delta", "ADS": "ads-sotw", "ADS_DELTA": "ads-delta"}[transport]

    def acked():
        rows = grpc_rows(grpc_server)
        return rows and rows[0]["in_sync"] and rows[0]

    row = wait_until(acked, timeout=10, what="Envoy's ACK of the current version in /clients")
    assert (row["node_id"], row["mode"], row["envoy_version"]) == ("local-envoy", mode, "1.40.0")
    assert row["version_held"] == row["sent_version"] == row["current_version"]
    assert (row["rejected"], row["stuck"], row["error"]) == (False, False, None)


def test_weights_and_a_draining_host(envoy, grpc_service, upstreams):
    heavy, light, spare = upstreams("heavy"), upstreams("light"), upstreams("spare")
    grpc_service.put(heavy.host(tags={"load_balancing_weight": 3}), light.host(tags={"load_balancing_weight": 1}))
    wait_until(
        lambda: [envoy.host(p).get("weight") for p in (heavy.port, light.port)] == [3, 1],
        timeout=10,
        what="weights 3 and 1 in Envoy",
    )
    spread = envoy.spread(400)
    assert 2.4 <= spread["heavy"] / spread["light"] <= 3.75, spread

    grpc_service.put(heavy.host(), light.host(), spare.host())
    envoy.wait_for_ports([heavy.port, light.port, spare.port])
    grpc_service.patch(spare, health_status="DRAINING")
    wait_until(
        lambda: envoy.host(spare.port)["health_status"]["eds_health_status"] == "DRAINING",
        timeout=10,
        what="spare DRAINING in Envoy",
    )
    assert set(envoy.spread(60)) == {"heavy", "light"}


def test_envoy_keeps_routing_while_eds_server_restarts_and_holds_the_current_state(
    envoy, grpc_server, grpc_service, upstreams
):
    alpha, beta = upstreams("alpha"), upstreams("beta")
    grpc_service.put(alpha.host())
    answered_by(envoy, "alpha")

    grpc_server.stop()
    assert envoy.spread(10) == {"alpha": 10}  # its stream is gone; its endpoints stay
    grpc_server.start()
    # Envoy reconnects (its back-off) and is sent the current state: still alpha.
    wait_until(lambda: grpc_rows(grpc_server), timeout=30, what="Envoy back on the gRPC stream")
    assert envoy.host_ports() == [alpha.port]

    grpc_service.put(beta.host())
    answered_by(envoy, "beta")


def test_envoy_streams_over_mutual_tls(eds_server, envoy_for, upstreams, tmp_path):
    from scripts.pki import make_pki

    pki = make_pki(tmp_path / "pki")
    server = eds_server(grpc=True, tls=pki)
    envoy = envoy_for(server, transport="ADS_DELTA")  # the eds_cluster gets TLS with the client certificate
    alpha = upstreams("alpha")
    response = requests.put(
        f"{server.url}/edsservice/{SERVICE}", json={"hosts": [alpha.host()]}, timeout=5, **server.client_options
    )
    assert response.status_code == 201
    answered_by(envoy, "alpha")
    assert envoy.stats("cluster.eds_cluster.ssl.").get("cluster.eds_cluster.ssl.handshake", 0) >= 1
