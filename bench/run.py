"""`make bench`: the poll path, the registry size and the writes, measured on this machine.

Every figure is taken in the same run as its baseline, and most are ratios:
eds-server (sqlite store) against a bare WSGI app under the very same gunicorn
options that reads the same captured 77 KB Envoy body and returns the same
bytes (`bench/bare_app.py`): the limit of this stack here. The whole set runs
`--rounds` times, interleaved, and the spread across rounds is reported,
because other work may share the machine's cores. Bounded: each load run
lasts `--seconds`; the whole bench takes a few minutes.

This module measures and returns figures; `bench/report.py` turns them into
docs/PERFORMANCE.md (printed too) and a line of docs/bench-history.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests

from eds_server import Settings
from eds_server.registry import Limits, Registry
from eds_server.store import open_store
from eds_server.xds import version_of
from eds_server.xds.resources import PATH_OF, V3
from scripts.processes import REPO, free_port, rss_kb, start, stop, wait_until, worker_pids

from . import failover, hardening, long_poll, propagation
from . import grpc as grpc_bench
from .report import (
    SHORT_TITLES,
    Round,
    hand_written_sections,
    record_run,
    render,
    render_history,
    render_long_poll,
    write_report,
)

FIXTURE = REPO / "tests" / "fixtures" / "envoy-1.40-eds-poll-request.json"
LUA = Path(__file__).parent / "lua"
REPORT = REPO / "docs" / "PERFORMANCE.md"
POLL = PATH_OF[V3]
SERVICE = "myservice"  # the name the captured poll asks for


def captured_body(version: str | None, name: str = SERVICE) -> bytes:
    body = json.loads(FIXTURE.read_text())["body"]
    body["version_info"] = version
    body["resource_names"] = [name]
    if version is None:
        del body["version_info"]
    return json.dumps(body, separators=(",", ":")).encode()


def service_name(size: int) -> str:
    return SERVICE if size == 10 else f"{SERVICE}-{size}"


def hosts(count: int, prefix: str = "10.0") -> list[dict]:
    return [
        {"ip_address": f"{prefix}.{i // 250}.{i % 250 + 1}", "port": 8000 + i, "tags": {"az": "zone-a"}}
        for i in range(count)
    ]


@dataclass
class Load:
    """What one wrk run measured."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(url: str, seconds: float, connections: int, script: str, body_file: Path | None = None) -> Load:
    env = {**os.environ, "BODY_FILE": str(body_file or "")}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(LUA / script), url],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout

    def latency(percentile: str) -> float:
        value, unit = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    return Load(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), latency("50"), latency("99"), errors)


def worker_rss_mb(master_pid: int) -> list[float]:
    """Resident memory of each gunicorn worker (the master's children)."""
    return [rss_kb(pid) / 1024 for pid in worker_pids(master_pid)]


def worker_cpu_seconds(master_pid: int) -> float:
    """User + system CPU time used so far by the gunicorn workers."""
    total = 0
    for pid in worker_pids(master_pid):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


class Server:
    """A real server process (eds-server or the bare app), started and stopped by PID."""

    def __init__(self, tmp: Path, args: list[str], name: str, port: int, env: dict[str, str] | None = None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process = start([sys.executable, *args], tmp / f"{name}-{port}.log", env=env)
        try:
            wait_until(lambda: requests.get(f"{self.url}/healthz", timeout=1).status_code < 500, 30, what=name)
        except TimeoutError:  # a server that never answered is stopped too, not left to the machine
            self.stop()
            raise

    def rss(self) -> list[float]:
        return worker_rss_mb(self.process.pid)

    def cpu(self) -> float:
        return worker_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        stop(self.process)


# The settings of every section but the comparison with the defaults (bench/defaults.py): the access
# log off, as for the bare app.
TUNED = {"EDS_ACCESS_LOG": "false"}


def eds_server(tmp: Path, db: Path, workers: int, services: int = 10_000, settings: dict | None = None) -> Server:
    """`settings`: EDS_ variables (TUNED unless given; {} runs the defaults)."""
    port = free_port()
    args = ["-m", "eds_server", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    args += ["--store", f"sqlite:///{db}"]
    env = {**(TUNED if settings is None else settings), "EDS_MAX_SERVICES": str(services + 100)}
    return Server(tmp, args, "eds-server", port, env=env)


def bare_server(tmp: Path, answers: Path, workers: int) -> Server:
    port = free_port()
    return Server(tmp, ["-m", "bench.bare_app", str(answers), str(port), str(workers), "false"], "bare", port)


def fill(db: Path, services: int, hosts_each: int) -> float:
    """Write `services` services straight into the store; returns the seconds it took."""
    store = open_store(f"sqlite:///{db}", version_of)
    registry = Registry(store, Limits(max_services=services + 100))
    started = time.monotonic()
    for index in range(services):
        registry.replace(f"svc-{index:05d}", {"hosts": hosts(hosts_each, prefix=f"10.{index % 200}")})
    store.close()
    return time.monotonic() - started


def parse_costs() -> dict[str, float]:
    """Microseconds to parse the captured body in-process, each way that was considered."""
    import orjson
    import xxhash

    from eds_server.xds.request import parse_request

    body = captured_body("some-version")
    ways: dict[str, Callable[[], object]] = {
        "json.loads (whole body)": lambda: json.loads(body),
        "orjson.loads (whole body)": lambda: orjson.loads(body),
        "simdjson, fields read (parse_request)": lambda: parse_request("v3", body),
        "the connection's last body again (its xxh3-128 digest)": lambda: xxhash.xxh3_128_digest(body),
    }
    return {name: min(timeit.repeat(way, number=500, repeat=5)) / 500 * 1e6 for name, way in ways.items()}


def dispatch_costs(tmp: Path) -> dict[str, float]:
    """Microseconds for one up-to-date poll in-process: through Flask + flask-restx, and as plain WSGI."""
    import io

    from eds_server import Settings, create_app

    app = create_app(Settings(store=f"sqlite:///{tmp / 'dispatch.db'}"))
    client = app.test_client()
    client.put(f"/edsservice/{SERVICE}", json={"hosts": hosts(10)})
    version = client.post(POLL, data=captured_body(None)).get_json()["version_info"]
    body = captured_body(version)
    base = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": POLL,
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
    }

    class Connection:  # what gunicorn hands the app as environ["gunicorn.socket"]
        pass

    def call(wsgi, connection=None) -> None:
        statuses = []
        environ = {**base, "wsgi.input": io.BytesIO(body), "gunicorn.socket": connection}
        result = wsgi(environ, lambda status, headers: statuses.append(status))
        b"".join(result)
        getattr(result, "close", lambda: None)()
        assert statuses[0].startswith("304"), statuses

    routes = app.wsgi_app  # PollRoutes, in front of Flask
    flask_only = routes.app  # the flask-restx resource of the same route, answering through the same code
    connection = Connection()
    ways = {
        "Flask + flask-restx route": lambda: call(flask_only),
        "PollRoutes (plain WSGI), body parsed": lambda: call(routes),
        "PollRoutes, the connection's last body again": lambda: call(routes, connection),
    }
    return {name: min(timeit.repeat(way, number=500, repeat=5)) / 500 * 1e6 for name, way in ways.items()}


def one_round(tmp: Path, args, answers: Path, bodies: Path, big_db: Path) -> Round:
    """Every figure once. Each ratio's two sides run back to back, so both meet the same machine load."""
    result = Round()
    seconds, connections = args.seconds, args.connections
    servers = {
        "bare": bare_server(tmp, answers, args.workers),
        "small": eds_server(tmp, tmp / f"small-{time.monotonic_ns()}.db", args.workers),
        "big": eds_server(tmp, big_db, args.workers, args.services),
    }
    try:
        for server in ("small", "big"):
            for size in (10, 100):
                url = f"{servers[server].url}/edsservice/{service_name(size)}"
                requests.put(url, json={"hosts": hosts(size)}).raise_for_status()

        def load(server: str, label: str, path: str, body: str) -> Load:
            cpu_before = servers[server].cpu()
            measured = wrk(servers[server].url + path, seconds, connections, "post.lua", bodies / body)
            # CPU per request: less at the mercy of whatever else runs on the machine than req/s.
            result.put(f"{label} cpu", (servers[server].cpu() - cpu_before) / (measured.rps * seconds) * 1e6)
            result.put(f"{label} rps", measured.rps)
            result.put(f"{label} p99", measured.p99_ms)
            result.put(f"{label} errors", measured.errors)
            return measured

        for size in (10, 100):
            load("bare", f"bare 304-{size}", "/304", f"stale-{size}.json")
            load("small", f"eds 304-{size}", POLL, f"current-{size}.json")
            load("bare", f"bare 200-{size}", f"/200-{size}", f"stale-{size}.json")
            load("small", f"eds 200-{size}", POLL, f"stale-{size}.json")
        load("small", "eds 1-service 304-10", POLL, "current-10.json")
        load("big", "eds 10k-services 304-10", POLL, "current-10.json")

        for script, label in (("upsert.lua", "upsert"), ("put100.lua", "put100")):
            writes = wrk(servers["small"].url, seconds, args.write_connections, script)
            result.put(f"{label} rps", writes.rps)
            result.put(f"{label} p99", writes.p99_ms)
            result.put(f"{label} errors", writes.errors)

        # A poll each for a thousand other services fills the caches the way a fleet would.
        for index in range(0, args.services, max(1, args.services // 1000)):
            requests.post(servers["big"].url + POLL, json={"resource_names": [f"svc-{index:05d}"]})
        for name, server in servers.items():
            result.put(f"{name} rss", max(server.rss()))
    finally:
        for server in servers.values():
            server.stop()
    return result


def long_poll_figures(tmp: Path, args) -> dict:
    figures: dict = {}
    server = eds_server(tmp, tmp / "long-poll.db", args.workers)
    try:
        # The shipped bootstrap: refresh_delay 0.1s, request_timeout 30s, polls held.
        figures["long-poll"] = long_poll.write_to_envoy(tmp, server.url, server.port, args.envoy_writes)
        # The same Envoy configured the old way (the tutorial's refresh_delay 1s): answered at once.
        figures["plain"] = long_poll.write_to_envoy(
            tmp, server.url, server.port, max(4, args.envoy_writes // 3), refresh_delay="1s", request_timeout="1s"
        )
    finally:
        server.stop()
    return figures


def propagation_section(tmp: Path, workers: int, writes: int) -> str:
    """Write and wait (bench/propagation.py) on a fresh server."""
    server = eds_server(tmp, tmp / "propagation.db", workers)
    try:
        return propagation.figures(server, captured_body(None), writes, workers, Settings().subscribed_within)
    finally:
        server.stop()


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages: how much else ran on its cores."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    memory_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    from importlib.metadata import version

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "stack": ", ".join(f"{p} {version(p)}" for p in ("gunicorn", "gevent", "flask", "flask-restx", "pysimdjson")),
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].split(" [")[0],
        "load average at start": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for polls (Envoys)")
    parser.add_argument("--write-connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--envoy-writes", type=int, default=30, help="writes timed to a real Envoy, long-poll")
    parser.add_argument("--held-clients", type=int, default=10_000, help="simulated Envoys holding a poll")
    parser.add_argument("--idle-seconds", type=float, default=10, help="how long CPU is measured while they hold")
    parser.add_argument("--wait-writes", type=int, default=20, help="writes waited for, per simulated fleet")
    parser.add_argument("--grpc-streams", type=int, default=10_000, help="concurrent ADS streams")
    parser.add_argument("--grpc-connections", type=int, default=100, help="HTTP/2 connections they share")
    parser.add_argument("--delta-services", type=int, default=1000, help="services one delta client subscribes to")
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    # (Imported here: they import this module's helpers, and `python -m bench.run` runs it as __main__.)
    from . import defaults, held_polls

    about = machine()
    with tempfile.TemporaryDirectory(prefix="eds-bench-") as name:
        tmp = Path(name)
        bodies = tmp / "bodies"
        bodies.mkdir()
        answers = tmp / "answers"
        answers.mkdir()
        # The bare app returns exactly the bytes eds-server answers for the 10- and 100-host services.
        probe = eds_server(tmp, tmp / "probe.db", 1)
        try:
            for size in (10, 100):
                name = service_name(size)
                requests.put(f"{probe.url}/edsservice/{name}", json={"hosts": hosts(size)}).raise_for_status()
                stale = captured_body("a-version-nobody-has", name)
                answer = requests.post(probe.url + POLL, data=stale)
                (answers / f"200-{size}").write_bytes(answer.content)
                (bodies / f"stale-{size}.json").write_bytes(stale)
                (bodies / f"current-{size}.json").write_bytes(captured_body(answer.json()["version_info"], name))
        finally:
            probe.stop()
        big_db = tmp / "big.db"
        print(f"filling {args.services} services x 10 hosts ...", flush=True)
        fill_seconds = fill(big_db, args.services, 10)
        parse = parse_costs()
        dispatch = dispatch_costs(tmp)
        rounds = []
        for index in range(args.rounds):
            print(f"round {index + 1}/{args.rounds} ...", flush=True)
            rounds.append(one_round(tmp, args, answers, bodies, big_db))
        as_shipped = defaults.measure(tmp, args, answers, bodies)
        print("long-poll ...", flush=True)
        long_poll = long_poll_figures(tmp, args)
        print(f"{args.held_clients} held polls ...", flush=True)
        held = held_polls.measure(tmp, args)
        print("failover ...", flush=True)
        failovers = failover.figures(tmp, args.workers, args.seconds, args.write_connections, args.rounds, wrk)
        print("write and wait ...", flush=True)
        write_and_wait = propagation_section(tmp, args.workers, args.wait_writes)
        print("limits and bad input ...", flush=True)
        bounds = hardening.measure(tmp)
        print("gRPC ...", flush=True)
        grpc_figures = grpc_bench.measure(
            tmp, args.envoy_writes, args.grpc_streams, args.grpc_connections, args.delta_services
        )
    headlines = {**defaults.headlines(as_shipped), **held_polls.headlines(held)}
    history = record_run(args.report.with_name("bench-history.jsonl"), about, rounds, long_poll, headlines)
    kept = hand_written_sections(args.report)
    sections = [
        render(args, about, rounds, parse, dispatch, fill_seconds),
        defaults.render(args, as_shipped),
        render_long_poll(args, long_poll),
        held_polls.render(args, held),
        grpc_bench.render(grpc_figures),
        failover.render(failovers),
        write_and_wait,
        hardening.render(bounds),
        *kept,
        render_history(history, ratios={*SHORT_TITLES.values(), *defaults.HEADLINE_RATIOS}),
    ]
    print(write_report(args.report, sections))
    print(f"written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
