"""Self-registration with a TTL and draining, watched in a real Envoy's /clusters."""

import threading
import time

import requests

from scripts.processes import wait_until


def heartbeat(server, upstreams_beating: dict, stop: threading.Event, every: float) -> threading.Thread:
    """A thread re-registering every upstream in `upstreams_beating` each `every` seconds, until `stop`."""

    def run():
        with requests.Session() as session:
            while True:
                for upstream in list(upstreams_beating.values()):
                    session.post(f"{server.url}/edsservice/myservice/hosts", json=upstream.host(ttl=1), timeout=5)
                if stop.wait(every):
                    return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_host_that_stops_heartbeating_leaves_envoy(eds_server, envoy_for, upstreams):
    server = eds_server(env={"EDS_SWEEP_INTERVAL": "0.1"})
    envoy = envoy_for(server, refresh_delay="0.2s")
    alpha, beta = upstreams("alpha"), upstreams("beta")
    beating = {"alpha": alpha, "beta": beta}
    stop = threading.Event()
    thread = heartbeat(server, beating, stop, every=0.3)
    try:
        envoy.wait_for_ports([alpha.port, beta.port])
        assert set(envoy.spread(20)) == {"alpha", "beta"}

        # beta's process keeps running: only its missing heartbeats take it out of Envoy.
        del beating["beta"]
        envoy.wait_for_ports([alpha.port], timeout=15)
        assert requests.get(f"http://127.0.0.1:{beta.port}/", timeout=5).text.strip() == "beta"
        # alpha, still heart-beating, outlives its 1 s ttl.
        time.sleep(1.5)
        assert envoy.host_ports() == [alpha.port]
        assert envoy.spread(10) == {"alpha": 10}
    finally:
        stop.set()
        thread.join(timeout=10)
    # Once nobody heart-beats, the service empties in Envoy too.
    envoy.wait_for_ports([], timeout=15)


def test_draining_a_host_then_removing_it(eds_server, envoy_for, upstreams):
    server = eds_server()
    envoy = envoy_for(server, refresh_delay="0.2s")
    alpha, beta = upstreams("alpha"), upstreams("beta")
    service = f"{server.url}/edsservice/myservice"
    assert requests.put(service, json={"hosts": [alpha.host(), beta.host()]}, timeout=5).ok
    envoy.wait_for_ports([alpha.port, beta.port])

    drained = requests.patch(f"{service}/hosts/127.0.0.1:{beta.port}", json={"health_status": "DRAINING"}, timeout=5)
    assert drained.status_code == 200

    def beta_health():
        [host] = [h for h in envoy.hosts() if h["address"]["socket_address"]["port_value"] == beta.port]
        return host["health_status"].get("eds_health_status")

    wait_until(lambda: beta_health() == "DRAINING", timeout=10, what="Envoy seeing beta DRAINING")
    assert envoy.spread(20) == {"alpha": 20}, "a draining host gets no new requests"

    removed = requests.delete(
        f"{service}/hosts/127.0.0.1:{beta.port}", headers={"If-Match": drained.headers["ETag"]}, timeout=5
    )
    assert removed.status_code == 204
    envoy.wait_for_ports([alpha.port])
