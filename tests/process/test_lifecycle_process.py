"""Host lifecycle against the real `python -m eds_server`: gunicorn workers sharing one sqlite file.

TTL expiry is watched in the server's log (reading a file is no traffic to the
server) and then checked through discovery; answers are compared as Envoy's protos.
"""

import re
import subprocess
import sys
import threading
import time
from collections import Counter

import requests
import yaml
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from scripts.processes import REPO, start, stop, wait_until
from tests.helpers.listing import registry_listing
from tests.helpers.readme import readme_script

V3_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
EXPIRE_LINE = re.compile(r"expire service=(\S+) hosts=(\S+) version=(\S+)->(\S+)")
CLOSE = {"Connection": "close"}  # a fresh connection per request, so that requests land on every worker


def discover(server, name, version=None):
    body = {"node": {"id": "test", "cluster": "test"}, "resource_names": [name], "type_url": V3_TYPE}
    if version is not None:
        body["version_info"] = version
    return requests.post(f"{server.url}/v3/discovery:endpoints", json=body, timeout=10, headers=CLOSE)


def endpoints(answer):
    """Every endpoint of the one assignment of a discovery answer, as `ip:port` (`[ip]:port` for IPv6)."""
    [assignment] = answer.json()["resources"]
    addresses = [
        lb["endpoint"]["address"]["socket_address"] for g in assignment["endpoints"] for lb in g["lb_endpoints"]
    ]
    return sorted(
        (f"[{a['address']}]" if ":" in a["address"] else a["address"]) + f":{a['port_value']}" for a in addresses
    )


def register(server, name, host, **headers):
    return requests.post(f"{server.url}/edsservice/{name}/hosts", json=host, timeout=30, headers={**CLOSE, **headers})


def expirations(server):
    """(service, [host, ...], version before, version after) for every expiry the server logged."""
    return [(m[1], m[2].split(","), m[3], m[4]) for m in EXPIRE_LINE.finditer(server.log_path.read_text())]


def test_20_clients_adding_25_hosts_each_to_one_service_lose_none(eds_server):
    server = eds_server(workers=3)
    statuses: Counter = Counter()
    lock = threading.Lock()

    def client(number):
        for i in range(25):
            status = register(server, "web", {"ip_address": f"10.0.{number}.{i + 1}", "port": 8000 + i}).status_code
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert statuses == {201: 500}
    expected = sorted(f"10.0.{n}.{i + 1}:{8000 + i}" for n in range(20) for i in range(25))
    assert endpoints(discover(server, "web")) == expected
    assert len(requests.get(f"{server.url}/edsservice/web", timeout=10).json()["hosts"]) == 500


def test_concurrent_writers_with_if_match_exactly_one_wins(eds_server):
    server = eds_server(workers=3)
    register(server, "web", {"ip_address": "10.0.0.1", "port": 80})
    etag = requests.get(f"{server.url}/edsservice/web", timeout=10).headers["ETag"]
    start = threading.Barrier(10)
    outcomes = {}

    def writer(number):
        start.wait(timeout=30)
        body = {"hosts": [{"ip_address": f"10.0.1.{number + 1}", "port": 80}]}
        response = requests.put(
            f"{server.url}/edsservice/web", json=body, headers={**CLOSE, "If-Match": etag}, timeout=30
        )
        outcomes[number] = response.status_code

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes.values()) == [200] + [412] * 9
    [winner] = [n for n, status in outcomes.items() if status == 200]
    assert endpoints(discover(server, "web")) == [f"10.0.1.{winner + 1}:80"]


def test_ttl_expiry_with_several_workers_happens_once_per_host_with_no_traffic(eds_server):
    # Three workers sweeping 20 times a second each: plenty of chances to sweep the same host twice.
    server = eds_server(workers=3, env={"EDS_SWEEP_INTERVAL": "0.05"})
    names = ("web", "api", "db")
    mortal = {name: [f"10.1.{n}.{i}:80" for i in range(1, 9)] for n, name in enumerate(names)}
    for n, name in enumerate(names):
        for i in range(1, 9):
            # Deadlines spread over 0.7 s, so each service expires in several sweeps.
            assert register(server, name, {"ip_address": f"10.1.{n}.{i}", "port": 80, "ttl": 1 + i / 10}).ok
        assert register(server, name, {"ip_address": "10.9.9.9", "port": 80}).ok  # no ttl: never expires
    held = {}
    for name in names:
        answer = discover(server, name)
        assert endpoints(answer) == sorted([*mortal[name], "10.9.9.9:80"])
        held[name] = answer.json()["version_info"]

    # No request at all from here until every expiry is logged.
    wait_until(
        lambda: sum(len(hosts) for _, hosts, _, _ in expirations(server)) >= 24,
        timeout=20,
        what="24 expirations in the log",
    )
    time.sleep(0.5)  # room for a second removal of some host to show up, were there one

    logged = expirations(server)
    removed = Counter(host for _, hosts, _, _ in logged for host in hosts)
    assert removed == Counter(host for hosts in mortal.values() for host in hosts), "each host exactly once"
    for name in names:
        # One unbroken chain of versions per service: no step applied twice, none lost.
        chain = [(before, after) for service, _, before, after in logged if service == name]
        assert chain[0][0] == held[name]
        assert all(chain[i][1] == chain[i + 1][0] for i in range(len(chain) - 1))
        answer = discover(server, name, version=held[name])
        assert answer.status_code == 200
        assert endpoints(answer) == ["10.9.9.9:80"]
        assert answer.json()["version_info"] == chain[-1][1]
        assert discover(server, name, version=chain[-1][1]).status_code == 304


def test_a_host_whose_ttl_ran_out_while_the_server_was_down_is_gone_from_the_first_answer(eds_server):
    # The workers' sweepers would first run 5 minutes after start: only the start-up sweep can remove it.
    server = eds_server(workers=2, env={"EDS_SWEEP_INTERVAL": "300"})
    assert register(server, "web", {"ip_address": "10.0.0.2", "port": 80}).ok
    registered = time.monotonic()
    assert register(server, "web", {"ip_address": "10.0.0.1", "port": 80, "ttl": 1}).ok
    held = discover(server, "web").json()["version_info"]
    server.stop()
    time.sleep(max(0.0, registered + 1.2 - time.monotonic()))
    server.start()

    first = discover(server, "web", version=held)
    assert first.status_code == 200 and endpoints(first) == ["10.0.0.2:80"]
    [(service, hosts, before, after)] = expirations(server)
    assert (service, hosts, before, after) == ("web", ["10.0.0.1:80"], held, first.json()["version_info"])
    # ... and it was removed by the master before it started a worker.
    second_run = server.log_path.read_text().split("Shutting down: Master")[-1]
    assert "expire service=web" in second_run.split("Booting worker")[0]


SEED = {
    "services": {
        "web": {
            "hosts": [
                {"ip_address": "10.0.0.5", "port": 8001, "tags": {"az": "us-central1-a", "load_balancing_weight": 50}},
                {"ip_address": "[::1]", "port": 8002, "health_status": "DEGRADED"},
            ],
            "policy": {"overprovisioning_factor": 140},
        },
        "api": {"hosts": [{"ip_address": "10.0.0.6", "port": 9000}]},
    }
}


def versions(server, names=("web", "api")):
    return {name: discover(server, name).json()["version_info"] for name in names}


def test_the_seed_is_loaded_once_and_a_restart_changes_no_version_nor_undoes_api_changes(eds_server, tmp_path):
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump(SEED))
    server = eds_server(workers=3, env={"EDS_SEED_FILE": str(seed)})
    log = server.log_path.read_text()
    assert log.count("seed service=web ") == 1 and log.count("seed service=api ") == 1, "once, not once per worker"
    assert endpoints(discover(server, "web")) == ["10.0.0.5:8001", "[::1]:8002"]
    seeded = versions(server)

    patched = requests.patch(
        f"{server.url}/edsservice/api/hosts/10.0.0.6:9000", json={"health_status": "DRAINING"}, timeout=10
    )
    assert patched.ok
    changed = versions(server)
    assert changed["web"] == seeded["web"] and changed["api"] != seeded["api"]

    server.restart()
    assert versions(server) == changed
    assert requests.get(f"{server.url}/edsservice/api", timeout=10).json()["hosts"][0]["health_status"] == "DRAINING"
    log = server.log_path.read_text()
    assert log.count("seed service=") == 2 and "kept 2 existing service(s)" in log


def test_export_then_seed_a_fresh_server_gives_the_same_discovery_answers(eds_server, tmp_path):
    source = eds_server(store=f"sqlite:///{tmp_path}/source.db")
    hosts = [
        {
            "ip_address": "10.0.0.1",
            "port": 8001,
            "hostname": "web-1",
            "metadata": {"version": "v2", "shard": {"id": 3, "tags": ["a", "b"]}},
            "tags": {"region": "eu", "az": "eu-1", "sub_zone": "r7", "canary": True, "load_balancing_weight": 50},
        },
        {"ip_address": "[1:2:3:4:5:6:7:8]", "port": 8002, "priority": 1, "health_status": "DRAINING", "ttl": 3600},
        {"ip_address": "2001:db8::1", "port": 65535, "tags": {"region": "eu", "az": "eu-1", "sub_zone": "r7"}},
    ]
    assert requests.put(f"{source.url}/edsservice/web", json={"hosts": hosts}, timeout=10).ok
    assert requests.put(
        f"{source.url}/edsservice/api",
        json={"hosts": hosts[:1], "policy": {"overprovisioning_factor": 200, "endpoint_stale_after": 1.5}},
        timeout=10,
    ).ok
    assert requests.put(f"{source.url}/edsservice/empty", json={"hosts": []}, timeout=10).ok
    exported = requests.get(f"{source.url}/edsservice?format=yaml", timeout=10)
    assert exported.ok
    seed = tmp_path / "export.yaml"
    seed.write_bytes(exported.content)

    copy = eds_server(store=f"sqlite:///{tmp_path}/copy.db", env={"EDS_SEED_FILE": str(seed)})
    for name in ("web", "api", "empty", "never-registered"):
        # Envoy's view: the answers parsed with its protos, and each assignment unpacked.
        answers = [
            json_format.Parse(discover(server, name).content, discovery_pb2.DiscoveryResponse())
            for server in (source, copy)
        ]
        assert answers[0] == answers[1], name
        assignments = []
        for answer in answers:
            [resource] = answer.resources
            assignment = endpoint_pb2.ClusterLoadAssignment()
            assert resource.Unpack(assignment)
            assignments.append(assignment)
        assert assignments[0] == assignments[1] and assignments[0].cluster_name == name
    assert len(assignments[0].endpoints) == 0
    assert requests.get(f"{copy.url}/edsservice?format=yaml", timeout=10).text == exported.text
    assert registry_listing(copy.url) == registry_listing(source.url)


def run_server(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "eds_server", "--port", "1", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=env,
    )


def test_a_bad_seed_file_stops_the_start_with_the_field_named(tmp_path):
    seed = tmp_path / "seed.yaml"
    seed.write_text("services:\n  web:\n    hosts:\n    - {ip_address: localhost, port: 80}\n")
    result = run_server(env={"EDS_SEED_FILE": str(seed), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "services.web.hosts[0].ip_address" in result.stderr and "not host names" in result.stderr


def test_a_store_that_cannot_be_opened_stops_the_start_with_a_message():
    result = run_server("--store", "sqlite:////proc/eds-registry.db")
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "/proc/eds-registry.db" in result.stderr


def test_the_readme_heartbeat_script_registers_holds_and_deregisters_on_exit(eds_server, tmp_path):
    server = eds_server(env={"EDS_SWEEP_INTERVAL": "0.1"})
    script = tmp_path / "heartbeat.sh"
    script.write_text(readme_script("# heartbeat.sh"))
    settings = {"EDS": server.url, "IP": "::1", "PORT": "8001", "TTL": "1", "EVERY": "0.2"}
    process = start(["bash", str(script)], tmp_path / "heartbeat.log", env=settings)

    def hosts():
        response = requests.get(f"{server.url}/edsservice/myservice", timeout=5)
        return [(h["ip_address"], h["port"], h["ttl"]) for h in response.json()["hosts"]] if response.ok else None

    wait_until(lambda: hosts() == [("::1", 8001, 1)], timeout=10, what="the script's registration")
    time.sleep(2)  # twice the ttl: only the heartbeats keep it
    assert hosts() == [("::1", 8001, 1)]
    stop(process)  # SIGTERM, as a service manager stops it: the trap deregisters
    assert hosts() == []
    assert "delete-host service=myservice" in server.log_path.read_text()
    assert expirations(server) == [], "removed by the script, not by its ttl"
