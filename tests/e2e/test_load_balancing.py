"""What the registry's weights, health statuses and priorities do to a real Envoy's traffic."""

import pytest

from scripts.processes import wait_until


def settled(envoy, upstreams_by_port: dict, check, what: str):
    """Wait until Envoy holds exactly these hosts and `check(host_status_by_port)` holds."""
    wait_until(
        lambda: (
            envoy.host_ports() == sorted(upstreams_by_port)
            and check({port: envoy.host(port) for port in upstreams_by_port})
        ),
        timeout=10,
        what=what,
    )


def eds_health(host_status: dict) -> str:
    return host_status["health_status"]["eds_health_status"]


def test_weights_three_to_one_split_traffic_near_three_to_one(envoy, myservice, upstreams):
    heavy, light = upstreams("heavy"), upstreams("light")
    myservice.put(heavy.host(tags={"load_balancing_weight": 3}), light.host(tags={"load_balancing_weight": 1}))
    settled(
        envoy,
        {heavy.port: heavy, light.port: light},
        lambda hosts: [h["weight"] for h in hosts.values()] == [3, 1],
        "weights 3 and 1 in Envoy",
    )
    spread = envoy.spread(400)
    assert set(spread) == {"heavy", "light"}, spread
    assert 2.4 <= spread["heavy"] / spread["light"] <= 3.75, spread


@pytest.mark.parametrize("status", ["DRAINING", "UNHEALTHY"])
def test_a_draining_or_unhealthy_host_gets_no_traffic_while_healthy_ones_exist(envoy, myservice, upstreams, status):
    # Two healthy hosts of three: above Envoy's 50% panic threshold, under which it would use every host.
    alpha, beta, gamma = upstreams("alpha"), upstreams("beta"), upstreams("gamma")
    myservice.put(alpha.host(), beta.host(), gamma.host())
    envoy.wait_for_ports([alpha.port, beta.port, gamma.port])
    assert set(envoy.spread(30)) == {"alpha", "beta", "gamma"}  # gamma does answer when healthy

    myservice.patch(gamma, health_status=status)
    wait_until(lambda: eds_health(envoy.host(gamma.port)) == status, timeout=10, what=f"gamma {status} in Envoy")
    spread = envoy.spread(60)
    assert set(spread) == {"alpha", "beta"}, spread


def test_priority_one_takes_traffic_only_when_priority_zero_has_no_healthy_host(envoy, myservice, upstreams):
    primary, standby = upstreams("primary"), upstreams("standby")
    myservice.put(primary.host(priority=0), standby.host(priority=1))
    envoy.wait_for_ports([primary.port, standby.port])
    assert envoy.spread(30) == {"primary": 30}

    myservice.patch(primary, health_status="UNHEALTHY")
    wait_until(lambda: eds_health(envoy.host(primary.port)) == "UNHEALTHY", timeout=10, what="primary unhealthy")
    assert envoy.spread(30) == {"standby": 30}

    myservice.patch(primary, health_status="HEALTHY")
    wait_until(lambda: eds_health(envoy.host(primary.port)) == "HEALTHY", timeout=10, what="primary healthy")
    assert envoy.spread(30) == {"primary": 30}
