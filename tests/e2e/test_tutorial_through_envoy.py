"""The classic tutorial through a real Envoy: what an operator sees on Envoy's listener after each step."""

import time

from scripts.processes import wait_until

# The tutorial's host, on a loopback upstream instead of its WSL address.
TAGS = {"az": "us-central1-a", "canary": False, "load_balancing_weight": 50}


def answered_by(envoy, name: str, timeout: float = 10) -> None:
    wait_until(lambda: envoy.get().text.strip() == name, timeout=timeout, what=f"traffic reaching {name}")


def test_the_tutorial_sequence(envoy, myservice, upstreams):
    response = envoy.get()
    assert (response.status_code, response.text) == (503, "no healthy upstream")

    hello1, hello2 = upstreams("hello-world1"), upstreams("hello-world2")
    myservice.post(hello1.host(tags=TAGS))
    answered_by(envoy, "hello-world1")
    assert envoy.spread(10) == {"hello-world1": 10}

    myservice.put()
    envoy.wait_for_ports([])
    response = envoy.get()
    assert (response.status_code, response.text) == (503, "no healthy upstream")

    myservice.put(hello1.host(tags=TAGS), hello2.host(tags=TAGS))
    envoy.wait_for_ports([hello1.port, hello2.port])
    # Equal weights, round robin in each of Envoy's worker threads: near an even split.
    spread = envoy.spread(40)
    assert set(spread) == {"hello-world1", "hello-world2"} and min(spread.values()) >= 15, spread


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
