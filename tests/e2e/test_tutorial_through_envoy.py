"""The classic tutorial through a real Envoy: what an operator sees on Envoy's listener after each step."""

import time

from scripts.processes import wait_until
from tests.e2e.conftest import tutorial_sequence


def test_the_tutorial_sequence(envoy, myservice, upstreams):
    tutorial_sequence(envoy, myservice, upstreams)


def test_deleting_the_service_removes_every_endpoint(envoy, myservice, upstreams):
    alpha, beta = upstreams("alpha"), upstreams("beta")
    myservice.put(alpha.host(), beta.host())
    envoy.wait_for_ports([alpha.port, beta.port])

    myservice.delete()
    # An empty `resources` list would make Envoy keep both hosts; they must go.
    envoy.wait_for_ports([])
    assert envoy.get().status_code == 503


def test_time_from_registry_write_to_traffic(server, envoy_for, myservice, upstreams, capsys):
    # The tutorial's plain polling: request_timeout 1s leaves nothing to hold a poll for.
    envoy = envoy_for(server, refresh_delay="1s", request_timeout="1s")
    latencies = []
    for upstream in (upstreams("alpha"), upstreams("beta"), upstreams("gamma")):
        writing = time.monotonic()
        myservice.put(upstream.host())  # each write replaces the previous host
        wait_until(
            lambda name=upstream.name: envoy.get().text.strip() == name,
            timeout=10,
            interval=0.01,
            what=f"traffic to {upstream.name}",
        )
        latencies.append(time.monotonic() - writing)
    figures = ", ".join(f"{seconds:.2f} s" for seconds in latencies)
    with capsys.disabled():
        print(f"\nregistry write -> traffic on the new host (refresh_delay 1s): {figures}")
    # Envoy polls again 1-2 x refresh_delay after each answer.
    assert max(latencies) < 2.5, latencies
