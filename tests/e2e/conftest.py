"""End-to-end fixtures: a real eds-server, a real Envoy polling it, real upstreams."""

from __future__ import annotations

import pytest
import requests

from scripts.envoy import GRPC_TRANSPORTS, Envoy, Upstream, start_envoy
from scripts.processes import EdsServer, wait_until

SERVICE = "myservice"  # the bootstrap's eds_cluster_config.service_name


class MyService:
    """The bootstrap's EDS service in one eds-server, written through the registry API as an operator would."""

    def __init__(self, server: EdsServer):
        self.url = f"{server.url}/edsservice/{SERVICE}"

    def _send(self, method: str, url: str, **kwargs) -> requests.Response:
        response = requests.request(method, url, timeout=5, **kwargs)
        assert response.ok, f"{method} {url}: {response.status_code} {response.text}"
        return response

    def post(self, *hosts: dict) -> None:
        self._send("POST", self.url, json={"hosts": list(hosts)})

    def put(self, *hosts: dict) -> None:
        self._send("PUT", self.url, json={"hosts": list(hosts)})

    def patch(self, upstream: Upstream, **fields) -> None:
        self._send("PATCH", f"{self.url}/hosts/127.0.0.1:{upstream.port}", json=fields)

    def delete(self) -> None:
        self._send("DELETE", self.url)


@pytest.fixture
def upstreams(tmp_path):
    """A factory of named upstream processes, all stopped at the end of the test."""
    started: list[Upstream] = []

    def make(name: str) -> Upstream:
        upstream = Upstream(name, tmp_path).start()
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        upstream.stop()


@pytest.fixture
def envoy_for(tmp_path):
    """A factory of Envoys polling the given eds-servers; each must end with update_rejected at 0."""
    started: list[Envoy] = []

    def make(*servers, transport: str = "REST", **options) -> Envoy:
        # Servers that serve TLS are polled over mutual TLS with their test certificates.
        options.setdefault("eds_tls", next((s.tls for s in servers if s.tls), None))
        ports = [s.grpc_port if transport in GRPC_TRANSPORTS else s.port for s in servers]
        envoy = start_envoy(tmp_path, ports, transport=transport, **options)
        started.append(envoy)
        return envoy

    yield make
    try:
        for envoy in started:
            assert envoy.stat("update_rejected") == 0, "Envoy rejected an update from eds-server"
    finally:
        for envoy in started:
            envoy.stop()


@pytest.fixture
def server(eds_server) -> EdsServer:
    return eds_server()


@pytest.fixture
def myservice(server) -> MyService:
    return MyService(server)


@pytest.fixture
def envoy(server, envoy_for) -> Envoy:
    """An Envoy on the shipped loopback bootstrap, polling `server`."""
    return envoy_for(server)


# The tutorial's host tags, on loopback upstreams instead of its WSL address.
TUTORIAL_TAGS = {"az": "us-central1-a", "canary": False, "load_balancing_weight": 50}


def answered_by(envoy: Envoy, name: str, timeout: float = 10) -> None:
    wait_until(lambda: envoy.get().text.strip() == name, timeout=timeout, what=f"traffic reaching {name}")


def tutorial_sequence(envoy: Envoy, service: MyService, upstreams) -> tuple[Upstream, Upstream]:
    """The classic tutorial as an operator sees it on Envoy's listener: no endpoints, one host and
    its traffic, emptied, two hosts balanced. Returns the two upstreams."""
    response = envoy.get()
    assert (response.status_code, response.text) == (503, "no healthy upstream")

    hello1, hello2 = upstreams("hello-world1"), upstreams("hello-world2")
    service.post(hello1.host(tags=TUTORIAL_TAGS))
    answered_by(envoy, "hello-world1")
    assert envoy.spread(10) == {"hello-world1": 10}

    service.put()
    envoy.wait_for_ports([])
    response = envoy.get()
    assert (response.status_code, response.text) == (503, "no healthy upstream")

    service.put(hello1.host(tags=TUTORIAL_TAGS), hello2.host(tags=TUTORIAL_TAGS))
    envoy.wait_for_ports([hello1.port, hello2.port])
    # Equal weights, round robin in each of Envoy's worker threads: near an even split.
    spread = envoy.spread(40)
    assert set(spread) == {"hello-world1", "hello-world2"} and min(spread.values()) >= 15, spread
    return hello1, hello2
