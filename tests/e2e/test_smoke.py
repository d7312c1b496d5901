"""The smallest end-to-end proof: a host registered in eds-server takes traffic through a real Envoy."""

import requests

from ..processes import wait_until


def test_register_then_traffic_flows_then_empty(eds_server, envoy_for, upstreams):
    server = eds_server()
    envoy = envoy_for(server)
    assert envoy.get().status_code == 503  # no endpoints yet: "no healthy upstream"

    alpha = upstreams("alpha")
    requests.put(f"{server.url}/edsservice/myservice", json={"hosts": [alpha.host()]}, timeout=5).raise_for_status()
    envoy.wait_for_ports([alpha.port])
    assert wait_until(lambda: envoy.get().text.strip() == "alpha", timeout=5, what="traffic to alpha")

    requests.put(f"{server.url}/edsservice/myservice", json={"hosts": []}, timeout=5).raise_for_status()
    envoy.wait_for_ports([])
    assert envoy.get().status_code == 503
