"""A real Envoy 1.40 over gRPC: EDS state of the world and delta, ADS state of the world and delta.

The same operator story as over REST (tests/e2e/test_tutorial_through_envoy.py),
through the shipped gRPC bootstraps; every Envoy ends with update_rejected 0
(the envoy_for fixture checks it).
"""

import copy

import pytest
import requests

from eds_server.store import open_store
from eds_server.xds import DiscoveryCore, version_of
from scripts.envoy import GRPC_TRANSPORTS, start_envoy
from scripts.processes import wait_until
from tests.e2e.conftest import SERVICE, MyService, answered_by, tutorial_sequence
from tests.helpers.grpc_in_process import InProcessGrpc


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


def grpc_rows(server) -> list[dict]:
    clients = requests.get(f"{server.url}/clients", params={"service": SERVICE}, timeout=5).json()["clients"]
    return [row for row in clients if row["transport"] == "grpc"]


def test_the_tutorial_sequence_then_deleted(envoy, grpc_service, upstreams):
    tutorial_sequence(envoy, grpc_service, upstreams)
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


class InvalidWeights(DiscoveryCore):
    """Every host with weight 0, which Envoy refuses (the registry never stores it): the test's own NACK maker.

    Found while looking for an update that Envoy rejects and the registry accepts: none among port 0,
    weight 0 or sums over uint32 per locality and priority, zone ids, metadata colliding with
    canary (each refused by the model); 0.0.0.0, ::, multicast, broadcast and priority 128 are accepted.
    """

    def resource(self, name):
        version, body = super().resource(name)
        body = copy.deepcopy(body)
        for group in body["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                endpoint["load_balancing_weight"] = 0
        return version, body


def test_an_update_envoy_rejects_shows_its_nack_in_clients(eds_server, upstreams, tmp_path, transport):
    store_url = f"sqlite:///{tmp_path}/nacks.db"
    rest = eds_server(store=store_url)  # writes and /clients; gRPC from this test process, same store
    store = open_store(store_url, version_of)
    grpc_part = InProcessGrpc(store, InvalidWeights).start()
    envoy = start_envoy(tmp_path, [grpc_part.port], transport=transport)  # not the fixture's: it will NACK
    try:
        alpha = upstreams("alpha")
        MyService(rest).put(alpha.host())

        def rejected():
            rows = grpc_rows(rest)
            return rows and rows[0]["rejected"] and rows[0]

        row = wait_until(rejected, timeout=15, what="Envoy's NACK in /clients")
        assert "LoadBalancingWeight: value must be greater than or equal to 1" in row["error"], row["error"]
        assert row["rejected_version"] == row["current_version"] == row["sent_version"]
        assert row["stuck"] and not row["in_sync"]
        assert envoy.stat("update_rejected") >= 1
        assert envoy.host_ports() == []  # Envoy kept what it had: nothing
    finally:
        envoy.stop()
        grpc_part.stop()
        store.close()


@pytest.mark.parametrize("ads", ["ADS", "ADS_DELTA"])
def test_clusters_asked_over_the_same_ads_are_answered_as_none(grpc_server, grpc_service, upstreams, tmp_path, ads):
    from scripts.envoy import Envoy, local_bootstrap
    from scripts.processes import free_port

    admin, listener = free_port(), free_port()
    bootstrap = local_bootstrap([grpc_server.grpc_port], listener, admin, transport=ads)
    bootstrap["dynamic_resources"]["cds_config"] = {"ads": {}, "resource_api_version": "V3"}
    envoy = Envoy(tmp_path, bootstrap, admin, listener).start()  # ready: it did not wait for clusters
    try:
        alpha = upstreams("alpha")
        grpc_service.put(alpha.host())
        answered_by(envoy, "alpha")  # its static clusters stay, fed by EDS over the same stream
        cds = envoy.stats("cluster_manager.cds.")
        assert cds["cluster_manager.cds.update_success"] >= 1 and cds["cluster_manager.cds.update_rejected"] == 0
        assert envoy.stat("update_rejected") == 0
    finally:
        envoy.stop()
