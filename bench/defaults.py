"""The section of `make bench` that runs eds-server as shipped: default settings against tuned ones.

A user runs the defaults, so the default settings are what the poll targets are about. Each round
starts the bare app and one eds-server per configuration below (sqlite, the same workers), and
runs each load on the bare app and then on a configuration, for each configuration in turn (they
take turns at going first, so that none always meets the machine fresher). A ratio is eds-server's
req/s over the bare app's in the run just before it.

The per-poll cost of the access logger is measured in-process too: what a successful poll costs
it when its line is left out (the default), and when it is written.
"""

from __future__ import annotations

import functools
import logging
import statistics
import tempfile
import timeit
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import requests
from gunicorn.config import Config

from eds_server.serving.logs import ACCESS_FORMAT, logger_class

from .report import table_head
from .run import POLL, TUNED, bare_server, eds_server, hosts, load_average, service_name, wrk

CONFIGURATIONS = {
    "defaults": {},
    "tuned (access log off)": TUNED,
    "defaults + a line per poll": {"EDS_ACCESS_LOG_POLLS": "true"},
}
# load -> (body file written by bench/run.py, the bare app's path answering the same bytes)
LOADS = {
    "304, 10 hosts": ("current-10.json", "/304"),
    "200, 10 hosts": ("stale-10.json", "/200-10"),
    "200, 100 hosts": ("stale-100.json", "/200-100"),
}
# What the default settings must reach, as a share of the bare app's req/s.
TARGETS = {"304, 10 hosts": 0.85, "200, 100 hosts": 0.80}
# The columns this section adds to docs/bench-history.jsonl: the defaults' ratio for each target.
HEADLINE_RATIOS = {f"defaults {load}": load for load in TARGETS}


def measure(tmp: Path, args, answers: Path, bodies: Path) -> dict:
    """Every round's req/s and worker CPU per request, keyed (configuration, load, figure): "rps" and
    "cpu" of eds-server, "bare rps" and "bare cpu" of the bare app in the run just before."""
    rounds = []
    started_at = load_average()
    for index in range(args.rounds):
        print(f"defaults against tuned settings, round {index + 1}/{args.rounds} ...", flush=True)
        servers = {"bare": bare_server(tmp, answers, args.workers)}
        try:
            for number, (name, settings) in enumerate(CONFIGURATIONS.items()):
                db = tmp / f"defaults-{index}-{number}.db"
                servers[name] = eds_server(tmp, db, args.workers, settings=settings)
                for size in (10, 100):
                    url = f"{servers[name].url}/edsservice/{service_name(size)}"
                    requests.put(url, json={"hosts": hosts(size)}).raise_for_status()
            turn = index % len(CONFIGURATIONS)
            order = [*list(CONFIGURATIONS)[turn:], *list(CONFIGURATIONS)[:turn]]
            figures: dict[tuple[str, str, str], float] = {}
            for load, (body, bare_path) in LOADS.items():
                for name in order:
                    # The bare app right before each configuration: the two runs of a ratio meet
                    # the same load from whatever else shares the machine.
                    for side, path in (("bare", bare_path), (name, POLL)):
                        server = servers[side]
                        cpu_before = server.cpu()
                        measured = wrk(server.url + path, args.seconds, args.connections, "post.lua", bodies / body)
                        if measured.errors:
                            raise RuntimeError(f"{side}, {load}: {measured.errors} errors or unexpected statuses")
                        cpu = (server.cpu() - cpu_before) / (measured.rps * args.seconds) * 1e6
                        key = "" if side == name else "bare "
                        figures[name, load, key + "rps"] = measured.rps
                        figures[name, load, key + "cpu"] = cpu
            rounds.append(figures)
        finally:
            for server in servers.values():
                server.stop()
    return {"rounds": rounds, "load average": (started_at, load_average()), "logging": logging_costs()}


def logging_costs() -> dict[str, float]:
    """Microseconds the access logger spends on one successful poll, in-process, its line written to a file."""
    resp = SimpleNamespace(status="304 Not Modified", status_code=304, sent=0, headers=[])
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": POLL,
        "PATH_INFO": POLL,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "eds.node": "envoy-1",
    }
    req = SimpleNamespace(headers=[("HOST", "eds_cluster"), ("CONTENT-TYPE", "application/json")])
    took = timedelta(microseconds=150)
    costs = {}
    with tempfile.TemporaryDirectory(prefix="eds-bench-log-") as directory:
        for label, polls_logged in (("line left out (default)", False), ("line written", True)):
            config = Config()
            config.set("accesslog", str(Path(directory) / "access.log"))
            config.set("access_log_format", ACCESS_FORMAT)
            logger = logger_class("text", polls_logged)(config)
            try:
                access = functools.partial(logger.access, resp, req, environ, took)
                runs = timeit.repeat(access, number=2000, repeat=5)
            finally:
                for handler in logger.access_log.handlers:
                    handler.close()
                logging.getLogger("gunicorn.access").handlers.clear()
            costs[label] = min(runs) / 2000 * 1e6
    return costs


def headlines(figures: dict) -> dict[str, float]:
    """This run's median ratio of the defaults for each target load, for the history."""
    return {
        column: round(
            statistics.median(r["defaults", load, "rps"] / r["defaults", load, "bare rps"] for r in figures["rounds"]),
            3,
        )
        for column, load in HEADLINE_RATIOS.items()
    }


def spread(values: list[float]) -> str:
    return f"**{statistics.median(values):.0%}** ({min(values):.0%}-{max(values):.0%})"


def render(args, figures: dict) -> str:
    rounds = figures["rounds"]

    def ratios(name: str, load: str, kind: str) -> list[float]:
        if kind == "rps":
            return [r[name, load, "rps"] / r[name, load, "bare rps"] for r in rounds]
        return [r[name, load, "bare cpu"] / r[name, load, "cpu"] for r in rounds]

    def verdict(load: str) -> str:
        target = TARGETS.get(load)
        if target is None:
            return "-"
        values = ratios("defaults", load, "rps")
        met = "met" if min(values) >= target else ("median met" if statistics.median(values) >= target else "MISSED")
        return f">= {target:.0%} {met}"

    columns = list(CONFIGURATIONS)
    lines = [
        "## Default settings against tuned ones",
        "",
        "What a user gets from `python -m eds_server` as shipped, against the same server tuned (the",
        "access log off, as every other section here runs it) and against the defaults with a line per",
        f"poll (`EDS_ACCESS_LOG_POLLS=true`, for following one Envoy). {args.rounds} rounds, each load run",
        f"{args.seconds:g} s with {args.connections} connections, the bare app's run right before each; {args.workers}",
        "workers, sqlite; each ratio is to that bare run (median of the rounds, lowest-highest). Load average",
        f"{figures['load average'][0]} before, {figures['load average'][1]} after.",
        "",
        *table_head(["load", "bare app req/s", *columns, "target (defaults)"]),
    ]
    for load in LOADS:
        bare = statistics.median(r[name, load, "bare rps"] for r in rounds for name in columns)
        cells = [spread(ratios(name, load, "rps")) for name in columns]
        lines.append(f"| {load} | {bare:,.0f} | " + " | ".join(cells) + f" | {verdict(load)} |")
    lines += [
        "",
        "The same runs as CPU ratios (the bare app's worker CPU per request over eds-server's: the",
        "throughput ratio if the workers had the cores to themselves):",
        "",
        *table_head(["load", *columns]),
    ]
    for load in LOADS:
        lines.append(f"| {load} | " + " | ".join(spread(ratios(name, load, "cpu")) for name in columns) + " |")
    lines += [
        "",
        "What the access logger costs a successful poll, in-process (the line written to a file):",
        "",
        *[f"- {label}: {cost:.2f} us" for label, cost in figures["logging"].items()],
        "",
    ]
    return "\n".join(lines)
