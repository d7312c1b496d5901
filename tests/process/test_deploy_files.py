"""The shipped deployment files: both Envoy bootstraps, docker-compose.yml and the Dockerfile.

There is no Docker engine here; what can be checked without one is: the real Envoy validates
both bootstraps, the real docker-compose loads the compose file, and the three files agree
with each other and with the repository (files they name exist, ports line up).
"""

import copy
import fnmatch
import shutil
import subprocess

import pytest
import yaml

from eds_server.settings import load_settings
from scripts.envoy import ADS_BOOTSTRAP, EDS_CLUSTER, GRPC_BOOTSTRAP, LOCAL_BOOTSTRAP, envoy_binary
from scripts.processes import REPO

from ..install import dockerfile

COMPOSE_BOOTSTRAP = REPO / "envoy" / "envoy.yaml"
COMPOSE_FILE = REPO / "docker-compose.yml"


def load(path):
    return yaml.safe_load(path.read_text())


def cluster(bootstrap: dict, name: str) -> dict:
    return next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == name)


def envoy_validate(path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "bootstrap", [COMPOSE_BOOTSTRAP, LOCAL_BOOTSTRAP, GRPC_BOOTSTRAP, ADS_BOOTSTRAP], ids=lambda p: p.name
)
def test_envoy_validates_the_bootstrap(bootstrap):
    result = envoy_validate(bootstrap)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr


def test_envoy_validate_does_refuse_a_broken_bootstrap(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(COMPOSE_BOOTSTRAP.read_text().replace("refresh_delay: ", "refresh_delay: x"))
    assert envoy_validate(broken).returncode != 0


@pytest.mark.parametrize(
    ("bootstrap", "api_type"), [(GRPC_BOOTSTRAP, "GRPC"), (ADS_BOOTSTRAP, "DELTA_GRPC")], ids=lambda v: str(v)
)
def test_the_grpc_bootstraps_stream_myservice_over_http2(bootstrap, api_type):
    loaded = load(bootstrap)
    eds_config = cluster(loaded, EDS_CLUSTER)["eds_cluster_config"]["eds_config"]
    source = loaded["dynamic_resources"]["ads_config"] if "ads" in eds_config else eds_config["api_config_source"]
    assert (source["api_type"], source["transport_api_version"]) == (api_type, "V3")
    assert source["grpc_services"] == [{"envoy_grpc": {"cluster_name": "eds_cluster"}}]
    options = cluster(loaded, "eds_cluster")["typed_extension_protocol_options"]
    assert options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"] == {
        "http2_protocol_options": {}
    }


def test_the_compose_bootstrap_polls_myservice_over_rest_v3():
    bootstrap = load(COMPOSE_BOOTSTRAP)
    assert bootstrap["admin"]["address"]["socket_address"]["port_value"] == 9901
    assert bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 10000
    target = cluster(bootstrap, EDS_CLUSTER)
    assert target["type"] == "EDS" and target["eds_cluster_config"]["service_name"] == "myservice"
    eds_config = target["eds_cluster_config"]["eds_config"]
    source = eds_config["api_config_source"]
    assert (source["api_type"], source["transport_api_version"], source["cluster_names"]) == (
        "REST",
        "V3",
        ["eds_cluster"],
    )
    assert {"refresh_delay", "request_timeout"} <= set(source) and "initial_fetch_timeout" in eds_config
    assert cluster(bootstrap, "eds_cluster")["type"] in ("STRICT_DNS", "LOGICAL_DNS")


def test_the_two_bootstraps_differ_only_in_addresses():
    """A change to one (timings, routes) must be made to the other too."""
    local, compose = load(LOCAL_BOOTSTRAP), load(COMPOSE_BOOTSTRAP)
    as_local = copy.deepcopy(compose)
    as_local["node"] = local["node"]
    as_local["admin"]["address"]["socket_address"]["address"] = "127.0.0.1"
    as_local["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] = "127.0.0.1"
    eds = cluster(as_local, "eds_cluster")
    eds["type"] = "STATIC"
    del eds["dns_lookup_family"]
    eds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"] = (
        "127.0.0.1"
    )
    assert as_local == local


def docker_compose(*args, path=COMPOSE_FILE) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: make system-deps installs it"
    return subprocess.run([binary, "-f", str(path), *args], capture_output=True, text=True, timeout=60, cwd=path.parent)


def test_docker_compose_loads_the_compose_file():
    result = docker_compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_docker_compose_does_refuse_a_broken_compose_file(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    image: containersol", "    imagee: containersol"))
    assert docker_compose("config", "-q", path=broken).returncode != 0


def published(service: dict) -> dict[int, int]:
    """Container port -> host port."""
    ports = {}
    for mapping in service.get("ports", []):
        host, container = mapping.split(":")
        ports[int(container)] = int(host)
    return ports


def test_the_compose_file_mirrors_the_tutorial_with_files_that_exist():
    compose = load(COMPOSE_FILE)
    services = compose["services"]
    assert set(services) == {"eds-server", "envoy", "hello-world1", "hello-world2"}

    # Envoy runs envoy/envoy.yaml, publishes its listener and admin as the tutorial does.
    envoy = services["envoy"]
    mounts = dict(volume.split(":")[:2] for volume in envoy["volumes"])
    assert mounts == {"./envoy/envoy.yaml": "/etc/envoy/envoy.yaml"}
    assert (REPO / "envoy" / "envoy.yaml").is_file()
    assert envoy["command"][envoy["command"].index("-c") + 1] == "/etc/envoy/envoy.yaml"
    assert envoy["image"].startswith("envoyproxy/envoy:v1.40")
    assert published(envoy) == {10000: 10000, 9901: 9901}

    # Envoy reaches eds-server by its service name, on the port the server listens on.
    bootstrap = load(COMPOSE_BOOTSTRAP)
    address = cluster(bootstrap, "eds_cluster")["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    socket_address = address["address"]["socket_address"]
    server = services["eds-server"]
    assert socket_address["address"] == "eds-server"
    assert set(server["networks"]) & set(envoy["networks"])
    assert published(server) == {socket_address["port_value"]: 8080}
    assert server["build"] == "." and dockerfile.DOCKERFILE.is_file()

    # The tutorial's upstreams on 8001 and 8002, at the fixed addresses the README registers.
    for number, port in ((1, 8001), (2, 8002)):
        upstream = services[f"hello-world{number}"]
        assert upstream["image"] == "containersol/hello-world" and published(upstream) == {80: port}
        assert upstream["networks"]["tutorial"]["ipv4_address"] == f"172.30.0.1{number}"


def test_the_dockerfile_copies_files_that_exist_and_runs_the_server_on_the_composed_port():
    instructions = dockerfile.instructions()
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip()]
    for _, arguments in (i for i in instructions if i[0] == "COPY"):
        *sources, _destination = arguments.split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), f"{source} is .dockerignored"

    (base,) = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert base.startswith("python:3.11")  # pyproject: requires-python >= 3.11

    # CMD runs the server on eds-server's container port (how it installs and starts: tests/install/).
    _script, *options = dockerfile.command()
    settings = load_settings(options, environ={})
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert published(load(COMPOSE_FILE)["services"]["eds-server"]) == {settings.port: 8080}
