"""The real `python -m eds_server` (gunicorn, several workers, one sqlite file)."""

import subprocess
import sys

import requests

from scripts.processes import REPO

V3_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def poll(server, version=None):
    body = {"node": {"id": "n"}, "resource_names": ["web"], "type_url": V3_TYPE}
    if version:
        body["version_info"] = version
    # A fresh connection each time, so that successive polls land on any worker.
    return requests.post(f"{server.url}/v3/discovery:endpoints", json=body, timeout=5, headers={"Connection": "close"})


def endpoints(response):
    [assignment] = response.json()["resources"]
    return sorted(
        lb["endpoint"]["address"]["socket_address"]["port_value"]
        for group in assignment["endpoints"]
        for lb in group["lb_endpoints"]
    )


def add_host(server, port, **fields):
    """POST one host of service `web` on a fresh connection (so successive writes land on any worker)."""
    return requests.post(
        f"{server.url}/edsservice/web/hosts",
        json={"ip_address": "127.0.0.1", "port": port, **fields},
        timeout=5,
        headers={"Connection": "close"},
    )


def assert_the_next_poll_serves_every_write(writers, pollers, ports):
    """Add one host per port on `writers` in turn; right after each, a poll on the next of `pollers`
    must get it (200, the write's version), and then every poller must answer that version with 304."""
    held = None
    for index, port in enumerate(ports):
        write = add_host(writers[index % len(writers)], port)
        assert write.status_code == 201
        poller = pollers[index % len(pollers)]
        answer = poll(poller, held)
        assert answer.status_code == 200, f"{poller.url} served a stale answer after port {port} was written"
        assert answer.json()["version_info"] == write.json()["version"]
        assert endpoints(answer) == list(ports[: index + 1])
        held = answer.json()["version_info"]
        assert [poll(other, held).status_code for other in pollers] == [304] * len(pollers)


def test_a_write_is_seen_by_the_very_next_poll_on_any_worker(eds_server):
    server = eds_server(workers=3)
    assert_the_next_poll_serves_every_write([server], [server], range(9001, 9031))


def test_a_restart_keeps_every_host_and_every_version(eds_server):
    server = eds_server(workers=2)
    for name in ("web", "api", "db"):
        hosts = [{"ip_address": f"10.0.0.{i}", "port": 80 + i, "ttl": 3600} for i in range(1, 6)]
        assert requests.put(f"{server.url}/edsservice/{name}", json={"hosts": hosts}, timeout=5).ok
    before = requests.get(f"{server.url}/edsservice", timeout=5).json()
    server.restart()
    after = requests.get(f"{server.url}/edsservice", timeout=5).json()
    assert after == before
    assert sum(len(s["hosts"]) for s in after) == 15


def test_memory_store_refuses_several_workers():
    result = subprocess.run(
        [sys.executable, "-m", "eds_server", "--store", "memory://", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "memory://" in result.stderr and "--workers 1" in result.stderr


def test_bad_settings_exit_with_a_message():
    result = subprocess.run(
        [sys.executable, "-m", "eds_server", "--store", "postgres://x"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "unknown scheme" in result.stderr
