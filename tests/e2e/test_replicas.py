"""A real Envoy polling two eds-server replicas on one Redis through one eds_cluster."""

import re
import time

import requests

from scripts.processes import wait_until

POLL_LINE = re.compile(r'"POST /v3/discovery:endpoints HTTP/1\.1" (\d{3})')


def poll_statuses(server, skip_bytes=0) -> list[str]:
    """The status of every poll in the replica's access log after its first `skip_bytes` bytes."""
    return POLL_LINE.findall(server.log_path.read_text()[skip_bytes:])


def log_size(server) -> int:
    return len(server.log_path.read_text())


def watch_hosts(envoy, until_ports, samples):
    """Sample Envoy's hosts (admin /clusters) until it holds `until_ports`; every sample is kept."""

    def holds():
        samples.append(envoy.host_ports())
        return samples[-1] == until_ports

    wait_until(holds, timeout=10, interval=0.02, what=f"Envoy holding {until_ports}")


def test_envoy_polls_two_replicas_without_flapping_and_rides_out_a_redis_outage(eds_server, redis_server, envoy_for):
    redis = redis_server()
    # Every poll with its access line: they tell which replica Envoy polled.
    replicas = [eds_server(store=redis.url, env={"EDS_ACCESS_LOG_POLLS": "true"}) for _ in range(2)]
    # Plain polling (request_timeout 1s leaves nothing to hold a poll for): the quiet 304s below are counted.
    envoy = envoy_for(*replicas, refresh_delay="0.1s", request_timeout="1s")
    samples: list[list[int]] = []

    ports: list[int] = []
    for index, port in enumerate(range(9001, 9011)):
        answer = requests.post(
            f"{replicas[index % 2].url}/edsservice/myservice/hosts",
            json={"ip_address": "127.0.0.1", "port": port},
            timeout=5,
        )
        assert answer.status_code == 201
        ports.append(port)
        watch_hosts(envoy, ports, samples)
    # No flapping: only ever a growing prefix of what was written, never a host lost and found again.
    for earlier, later in zip(samples, samples[1:], strict=False):
        assert set(earlier) <= set(later), f"Envoy went from {earlier} to {later}"
    assert all(poll_statuses(replica) for replica in replicas), "Envoy polled only one replica"

    # Both replicas give the same version for the same state, so a quiet Envoy only ever gets 304.
    marks = [log_size(replica) for replica in replicas]
    time.sleep(1.5)
    quiet = [status for replica, mark in zip(replicas, marks, strict=True) for status in poll_statuses(replica, mark)]
    assert len(quiet) >= 4 and set(quiet) == {"304"}, quiet

    redis.stop()
    refused = requests.post(
        f"{replicas[1].url}/edsservice/myservice/hosts", json={"ip_address": "127.0.0.1", "port": 9100}, timeout=5
    )
    assert refused.status_code == 503
    marks = [log_size(replica) for replica in replicas]
    time.sleep(1.5)
    during = [status for replica, mark in zip(replicas, marks, strict=True) for status in poll_statuses(replica, mark)]
    assert len(during) >= 4 and set(during) == {"304"}, during
    assert envoy.host_ports() == ports

    redis.start()
    wait_until(lambda: all(requests.get(f"{r.url}/readyz", timeout=5).ok for r in replicas), 10, what="ready")
    assert requests.post(
        f"{replicas[0].url}/edsservice/myservice/hosts", json={"ip_address": "127.0.0.1", "port": 9100}, timeout=5
    ).ok
    watch_hosts(envoy, ports + [9100], samples)
    assert envoy.stat("update_failure") == 0
