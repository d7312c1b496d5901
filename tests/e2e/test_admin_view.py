"""The host attributes an operator checks in Envoy's admin interface, as eds-server sent them."""

from scripts.processes import wait_until


def test_canary_shows_in_admin_clusters(envoy, myservice, upstreams):
    canary, stable = upstreams("canary"), upstreams("stable")
    myservice.put(canary.host(tags={"canary": True}), stable.host(tags={"canary": False}))
    envoy.wait_for_ports([canary.port, stable.port])
    lines = envoy.clusters_text().splitlines()
    assert f"targetCluster::127.0.0.1:{canary.port}::canary::true" in lines
    assert f"targetCluster::127.0.0.1:{stable.port}::canary::false" in lines


def test_locality_shows_in_admin_clusters_json(envoy, myservice, upstreams):
    west, east = upstreams("west"), upstreams("east")
    myservice.put(
        west.host(tags={"region": "us-west1", "az": "us-west1-b", "sub_zone": "rack7"}, hostname="web-west"),
        east.host(tags={"region": "us-east1", "az": "us-east1-c"}),
    )
    envoy.wait_for_ports([west.port, east.port])
    assert envoy.host(west.port)["locality"] == {"region": "us-west1", "zone": "us-west1-b", "sub_zone": "rack7"}
    assert envoy.host(west.port)["hostname"] == "web-west"
    assert envoy.host(east.port)["locality"] == {"region": "us-east1", "zone": "us-east1-c"}
    # Both localities take traffic: without locality-weighted balancing Envoy spreads over all hosts.
    wait_until(lambda: set(envoy.spread(10)) == {"west", "east"}, timeout=5, what="traffic to both localities")
