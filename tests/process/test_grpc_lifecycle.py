"""The gRPC process beside gunicorn: started with the server, refused on a taken port, stopped with it, watched."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import requests

from scripts.pki import make_pki
from scripts.processes import REPO, free_port, survivors, wait_until, worker_pids
from scripts.xds_client import NODE, XdsStream, assignments


def grpc_pid(master: int) -> int:
    for pid in worker_pids(master):
        if b"grpc_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError(f"no gRPC process under {master}")


def test_a_taken_grpc_port_fails_the_start_with_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "eds_server", "--host", "127.0.0.1", "--port", str(free_port()),
             "--grpc-port", str(port), "--store", f"sqlite:///{tmp_path}/r.db", "--workers", "1"],
            capture_output=True, text=True, timeout=60, cwd=REPO, start_new_session=True,
        )  # fmt: skip
    assert (result.returncode, result.stdout) == (1, "")
    [line] = result.stderr.splitlines()  # grpc's own log of the failed bind no longer comes first
    assert line == (
        f"eds-server: cannot start: cannot listen on 127.0.0.1:{port} (the gRPC port): Address already in use "
        "(another process listens there; stop it or choose another --grpc-port)"
    )


def test_a_second_server_on_the_same_grpc_port_is_refused(eds_server, tmp_path):
    first = eds_server(grpc=True)
    result = subprocess.run(
        [sys.executable, "-m", "eds_server", "--host", "127.0.0.1", "--port", str(free_port()),
         "--grpc-port", str(first.grpc_port), "--store", f"sqlite:///{tmp_path}/other.db", "--workers", "1"],
        capture_output=True, text=True, timeout=60, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{first.grpc_port} (the gRPC port)" in result.stderr
    assert requests.get(f"{first.url}/readyz", timeout=5).status_code == 200


def test_sigterm_ends_the_streams_and_every_process(eds_server):
    server = eds_server(grpc=True)
    master = server.process.pid
    with grpc.insecure_channel(server.grpc_target) as channel:
        stream = XdsStream(channel, "StreamEndpoints")
        stream.send(node=NODE, resource_names=["web"])
        stream.receive()
        os.kill(master, signal.SIGTERM)  # the master alone, as an orchestrator does
        ended = stream.ended(timeout=20)
    assert ended.code == grpc.StatusCode.UNAVAILABLE
    assert server.process.wait(30) == 0
    wait_until(lambda: survivors([master]) == [], timeout=10, what="every process of the server gone")
    log = server.log_path.read_text()
    assert "gRPC xDS stopping" in log and "gRPC xDS is down" not in log


def test_five_thousand_envoys_reconnecting_at_once_are_all_served(eds_server):
    """A fleet comes back together after a restart. At its default size, grpc's own queue of streams
    not yet taken up by the loop cancelled some of these (each Envoy would have come back only after
    its backoff): every one of them is served."""
    server = eds_server(grpc=True)
    assert requests.put(f"{server.url}/edsservice/fleet", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]},
                        timeout=5).ok  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "scripts.stream_burst", server.grpc_target, "fleet", "5000", "50"],
        capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    burst = json.loads(result.stdout)
    assert burst["failed"] == {} and burst["served"] == 5000, burst
    assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200


def test_no_process_outlives_a_killed_master(eds_server):
    server = eds_server(grpc=True)
    master = server.process.pid
    children = worker_pids(master)
    assert grpc_pid(master) in children
    os.kill(master, signal.SIGKILL)
    wait_until(lambda: survivors([master]) == [], timeout=15, what="the workers and the gRPC process gone")


def test_a_grpc_process_that_dies_is_logged_and_fails_readyz(eds_server):
    server = eds_server(grpc=True)
    pid = grpc_pid(server.process.pid)
    os.kill(pid, signal.SIGKILL)

    def unready():
        response = requests.get(f"{server.url}/readyz", timeout=5)
        return response.status_code == 503 and response.json()

    body = wait_until(unready, timeout=10, what="/readyz 503")
    assert f"gRPC process (pid {pid}" in body["parts"]["grpc"] and "SIGKILL" in body["parts"]["grpc"]
    assert "gRPC xDS is down" in server.log_path.read_text()
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200  # REST itself still serves


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def _tls_channel(server, pki, client_cert: bool) -> grpc.Channel:
    key_pair = pki.client
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(pki.ca).read_bytes(),
        private_key=Path(key_pair.key).read_bytes() if client_cert else None,
        certificate_chain=Path(key_pair.cert).read_bytes() if client_cert else None,
    )
    return grpc.secure_channel(
        server.grpc_target, credentials, options=[("grpc.ssl_target_name_override", pki.server_name)]
    )


def test_grpc_serves_mutual_tls_with_the_servers_certificates(eds_server, pki):
    server = eds_server(grpc=True, tls=pki)
    with _tls_channel(server, pki, client_cert=True) as channel:
        stream = XdsStream(channel, "StreamEndpoints")
        stream.send(node=NODE, resource_names=["web"])
        assert "web" in assignments(stream.receive())
        stream.close()
    with _tls_channel(server, pki, client_cert=False) as channel:
        refused = XdsStream(channel, "StreamEndpoints")
        refused.send(node=NODE, resource_names=["web"])
        assert refused.ended().code == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(server.grpc_target) as channel:
        plain = XdsStream(channel, "StreamEndpoints")
        plain.send(node=NODE, resource_names=["web"])
        assert plain.ended().code == grpc.StatusCode.UNAVAILABLE
