"""Long-poll with a real Envoy 1.40 on the shipped bootstrap (refresh_delay 0.1s, request_timeout 30s)."""

import time

import requests

from scripts.envoy import start_rejecting_envoy
from scripts.processes import wait_until
from tests.helpers.held_polls import polls_held


def polls_answered(server) -> float:
    """Polls counted so far; each worker writes its count every second, so a window between two
    readings may be up to a second shorter or longer than the time between them."""
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("eds_polls_total{"))


def held(server) -> float:
    return polls_held(requests.get(f"{server.url}/metrics", timeout=5).text)


def test_a_write_reaches_envoy_in_milliseconds(eds_server, envoy_for, upstreams):
    server = eds_server()
    # A refresh_delay of 2 s: without holding, a write would wait for Envoy's next poll, 2-4 s away.
    envoy = envoy_for(server, refresh_delay="2s")
    alpha, beta = upstreams("alpha"), upstreams("beta")
    requests.put(f"{server.url}/edsservice/myservice", json={"hosts": [alpha.host()]}, timeout=5).raise_for_status()
    envoy.wait_for_ports([alpha.port], timeout=10)
    wait_until(lambda: held(server) == 1, timeout=10, what="Envoy's next poll held")

    written = time.monotonic()
    requests.put(f"{server.url}/edsservice/myservice", json={"hosts": [beta.host()]}, timeout=5).raise_for_status()
    envoy.wait_for_ports([beta.port], timeout=5)
    elapsed = time.monotonic() - written
    print(f"\nwrite to Envoy holding the new host: {elapsed * 1000:.1f} ms (long-poll, refresh_delay 2s)")
    assert elapsed < 0.5
    assert wait_until(lambda: envoy.get().text.strip() == "beta", timeout=5, what="traffic to beta")


def test_steady_state_holds_end_cleanly(eds_server, envoy_for, upstreams):
    """Holds that end by time (1 s here) answer 304 well before Envoy's timeout: no update_failure."""
    server = eds_server(env={"EDS_LONG_POLL_MAX_HOLD": "1"})
    envoy = envoy_for(server)
    alpha = upstreams("alpha")
    requests.put(f"{server.url}/edsservice/myservice", json={"hosts": [alpha.host()]}, timeout=5).raise_for_status()
    envoy.wait_for_ports([alpha.port])
    before = polls_answered(server)
    time.sleep(3.5)
    polls = polls_answered(server) - before
    # Plain polling at refresh_delay 0.1s would be 17-35 polls (12+ in the shortest window, 2.5 s);
    # held ones end each second: 2-5 in the 2.5-4.5 s window.
    assert 2 <= polls <= 6, polls
    assert envoy.stat("update_failure") == 0
    assert envoy.stat("update_success") >= 1


def test_plain_polling_still_works_for_envoys_configured_the_old_way(eds_server, envoy_for, upstreams):
    server = eds_server()
    # request_timeout 1s: minus the 1 s margin nothing is left to hold for, so every poll is answered at once.
    envoy = envoy_for(server, refresh_delay="0.2s", request_timeout="1s")
    alpha = upstreams("alpha")
    requests.put(f"{server.url}/edsservice/myservice", json={"hosts": [alpha.host()]}, timeout=5).raise_for_status()
    envoy.wait_for_ports([alpha.port])
    before = polls_answered(server)
    time.sleep(3)  # at least 2 s of polls, each 0.2-0.4 s after the previous answer
    assert polls_answered(server) - before >= 4
    assert held(server) == 0
    assert envoy.stat("update_failure") == 0


def test_an_envoy_rejecting_an_update_is_not_answered_in_a_tight_loop(tmp_path, eds_server, upstreams):
    server = eds_server(env={"EDS_LONG_POLL_MAX_HOLD": "1"})
    # The fastest Envoy can poll, rejecting any host at a priority other than 0.
    envoy = start_rejecting_envoy(tmp_path, [server.port], refresh_delay="0.001s")
    try:
        alpha = upstreams("alpha")
        requests.put(f"{server.url}/edsservice/myservice", json={"hosts": [alpha.host()]}, timeout=5)
        envoy.wait_for_ports([alpha.port])
        requests.post(
            f"{server.url}/edsservice/myservice/hosts",
            json={"ip_address": "127.0.0.2", "port": 1, "priority": 1},
            timeout=5,
        ).raise_for_status()
        wait_until(lambda: envoy.stat("update_rejected") >= 1, timeout=10, what="Envoy rejecting the update")

        before = polls_answered(server)
        time.sleep(3)
        polls = polls_answered(server) - before
        # Answered at once, this Envoy would poll hundreds of times a second; held, about once per hold (1 s here).
        print(f"\npolls in 3 s from an Envoy rejecting the current version: {polls:.0f}")
        assert polls <= 6, polls
        assert envoy.host_ports() == [alpha.port]  # it kept what it had
        # The clients view shows it: out of sync, and stuck once it came back with its old version a few times.
        rows = wait_until(
            lambda: [
                (r["node_id"], r["in_sync"], r["stuck"])
                for r in requests.get(f"{server.url}/clients", params={"service": "myservice"}, timeout=5).json()[
                    "clients"
                ]
                if r["stuck"]
            ],
            timeout=10,
            what="the rejecting Envoy shown as stuck",
        )
        assert rows == [("local-envoy", False, True)]
    finally:
        envoy.stop()
