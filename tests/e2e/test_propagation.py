"""Write and wait with real Envoys 1.40: two on long-poll (the shipped bootstrap), one polling plainly.

What the wait says is checked against what each Envoy holds (admin /clusters), and a rejection
against Envoy's own update_rejected counter.
"""

from __future__ import annotations

import subprocess
import threading

import pytest
import requests

from scripts.envoy import Envoy, start_rejecting_envoy
from tests.helpers.readme import readme_script

SERVICE = "myservice"  # the bootstrap's service_name
LONG_POLL = ("edge-long-1", "edge-long-2")
PLAIN = "edge-plain"


@pytest.fixture
def fleet(server, envoy_for) -> dict[str, Envoy]:
    """Three Envoys on `server`: two long-polling, one on the tutorial's plain polling (refresh_delay 1s)."""
    envoys = {node: envoy_for(server, node_id=node) for node in LONG_POLL}
    envoys[PLAIN] = envoy_for(server, node_id=PLAIN, refresh_delay="1s", request_timeout="1s")
    return envoys


def write(server, method: str, path: str = "", wait: float | None = None, **kwargs) -> requests.Response:
    params = {} if wait is None else {"wait": wait}
    return requests.request(method, f"{server.url}/edsservice/{SERVICE}{path}", params=params, timeout=60, **kwargs)


def propagation(server, **params) -> requests.Response:
    return requests.get(f"{server.url}/edsservice/{SERVICE}/propagation", params=params, timeout=60)


def test_a_write_waited_for_is_answered_once_every_envoy_holds_it(server, fleet, upstreams):
    alpha, beta = upstreams("alpha"), upstreams("beta")
    for envoy in fleet.values():
        envoy.wait_for_ports([])  # each has asked once: all three are subscribed
    for hosts in ([alpha], [alpha, beta], [beta]):
        answer = write(server, "PUT", wait=20, json={"hosts": [u.host() for u in hosts]})
        assert answer.status_code in (200, 201), answer.text
        outcome = answer.json()["propagation"]
        assert (outcome["outcome"], outcome["have_it"], outcome["subscribed"]) == ("in_sync", 3, 3)
        print(f"\n{len(hosts)} host(s): every Envoy had it {outcome['waited'] * 1000:.0f} ms after the write")
        # What the wait said is what each Envoy holds, read from the Envoy itself right after the answer.
        for node, envoy in fleet.items():
            assert envoy.host_ports() == sorted(u.port for u in hosts), node


def test_a_stopped_envoy_is_named_until_it_resumes_and_no_wait_passes_the_server_maximum(
    eds_server, envoy_for, upstreams
):
    server = eds_server(env={"EDS_PROPAGATION_MAX_WAIT": "5"})
    fleet = {node: envoy_for(server, node_id=node) for node in LONG_POLL}
    alpha, beta = upstreams("alpha"), upstreams("beta")
    assert write(server, "PUT", wait=5, json={"hosts": [alpha.host()]}).status_code == 201
    assert write(server, "PUT", wait=6, json={"hosts": [beta.host()]}).status_code == 400  # over the maximum

    stopped = fleet["edge-long-2"]
    stopped.pause()
    try:
        answer = write(server, "PUT", wait=5, json={"hosts": [beta.host()]})
        assert answer.status_code == 504, answer.text
        body = answer.json()
        version = body["version"]
        assert body["propagation"]["behind"] == ["edge-long-2"]
        assert body["propagation"]["waited"] <= 5.5  # the wait ends by itself at the maximum asked
        assert "behind: edge-long-2 (holds " in body["message"]
        assert fleet["edge-long-1"].host_ports() == [beta.port]
        assert requests.get(f"{server.url}/edsservice/{SERVICE}", timeout=5).json()["hosts"][0]["port"] == beta.port

        waited = []
        waiter = threading.Thread(target=lambda: waited.append(propagation(server, version=version, wait=5)))
        waiter.start()
    finally:
        stopped.resume()
    waiter.join(10)
    assert waited[0].status_code == 200, waited[0].text
    assert waited[0].json()["have_it"] == 2
    assert stopped.host_ports() == [beta.port]


def test_an_envoy_rejecting_the_update_is_named_at_once(tmp_path, server, envoy_for, upstreams):
    accepting = envoy_for(server, node_id="edge-long-1")
    rejecting = start_rejecting_envoy(tmp_path, [server.port], node_id="edge-rejecting")
    try:
        alpha = upstreams("alpha")
        assert write(server, "PUT", wait=20, json={"hosts": [alpha.host()]}).status_code == 201
        standby = {"ip_address": "127.0.0.2", "port": 1, "priority": 1}
        answer = write(server, "POST", "/hosts", wait=20, json=standby)
        assert answer.status_code == 502, answer.text
        body = answer.json()["propagation"]
        assert (body["outcome"], body["rejected"]) == ("rejected", ["edge-rejecting"])
        assert body["waited"] < 20  # it did not wait for the time to run out
        assert rejecting.stat("update_rejected") >= 1  # Envoy's own word for it
        assert rejecting.host_ports() == [alpha.port]
        assert accepting.host_ports() == sorted([alpha.port, 1])
        print(f"\na rejection named {body['waited'] * 1000:.0f} ms after the write")
    finally:
        rejecting.stop()


def test_bad_input_is_refused_with_the_field_named(server, fleet):
    requests.put(f"{server.url}/edsservice/{SERVICE}", json={"hosts": []}, timeout=5).raise_for_status()
    for params, field in (({"wait": "-1"}, "wait"), ({"wait": "1e9"}, "wait"), ({"version": "v1"}, "version")):
        answer = propagation(server, **params)
        assert answer.status_code == 400, params
        assert answer.json()["errors"][0]["field"] == field
    assert write(server, "PUT", wait=-1, json={"hosts": [{"ip_address": "127.0.0.1", "port": 1}]}).status_code == 400
    assert requests.get(f"{server.url}/edsservice/{SERVICE}", timeout=5).json()["hosts"] == []
    unknown = requests.get(f"{server.url}/edsservice/nobody/propagation", timeout=5)
    assert unknown.status_code == 404 and "nobody" in unknown.json()["message"]


def test_a_wait_on_one_replica_hears_the_envoys_of_another(eds_server, redis_url, envoy_for, upstreams):
    """Two replicas on one Redis: the Envoys poll one, the write and its wait go to the other."""
    polled, written_to = eds_server(store=redis_url), eds_server(store=redis_url)
    fleet = [envoy_for(polled, node_id=node) for node in LONG_POLL]
    alpha = upstreams("alpha")
    for envoy in fleet:
        envoy.wait_for_ports([])
    answer = write(written_to, "PUT", wait=20, json={"hosts": [alpha.host()]})
    assert answer.status_code == 201, answer.text
    outcome = answer.json()["propagation"]
    assert (outcome["outcome"], outcome["have_it"]) == ("in_sync", 2)
    assert outcome["waited"] < 20
    assert [envoy.host_ports() for envoy in fleet] == [[alpha.port], [alpha.port]]


def run_deploy(tmp_path, server, new, old, wait: float) -> subprocess.CompletedProcess:
    """The README's deploy.sh, as an operator runs it."""
    script = tmp_path / "deploy.sh"
    script.write_text(readme_script("# deploy.sh"))
    settings = {"EDS": server.url, "NEW": f"127.0.0.1:{new.port}", "OLD": f"127.0.0.1:{old.port}"}
    env = {"PATH": "/usr/bin:/bin", **settings, "WAIT": str(wait), "DRAIN": "0"}
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)


def test_the_readme_deploy_script_replaces_a_host_or_stops_naming_the_envoy_behind(
    tmp_path, server, envoy_for, upstreams
):
    fleet = {node: envoy_for(server, node_id=node) for node in LONG_POLL}
    alpha, beta, gamma = upstreams("alpha"), upstreams("beta"), upstreams("gamma")
    assert write(server, "PUT", wait=20, json={"hosts": [alpha.host()]}).status_code == 201

    done = run_deploy(tmp_path, server, new=beta, old=alpha, wait=20)
    assert done.returncode == 0, done.stderr
    assert [envoy.host_ports() for envoy in fleet.values()] == [[beta.port], [beta.port]]

    fleet["edge-long-2"].pause()
    try:
        stopped = run_deploy(tmp_path, server, new=gamma, old=beta, wait=2)
    finally:
        fleet["edge-long-2"].resume()
    assert stopped.returncode == 22  # curl --fail-with-body: the first step did not reach every Envoy
    assert "curl: (22) The requested URL returned error: 504" in stopped.stderr
    assert "behind: edge-long-2 (holds " in stopped.stdout
    # It stopped after the first step: the new host is in, the old one neither drained nor removed.
    hosts = requests.get(f"{server.url}/edsservice/{SERVICE}", timeout=5).json()["hosts"]
    assert sorted((h["port"], h["health_status"]) for h in hosts) == sorted(
        [(beta.port, "HEALTHY"), (gamma.port, "HEALTHY")]
    )
