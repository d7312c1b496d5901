"""The failover figures of `make bench`: how long writes are refused while Sentinel replaces a
killed primary, and the write rate with and without waiting for a replica (WAIT).

Real processes on loopback, as in tests/failover: a primary, two replicas and three Sentinels
(`down-after-milliseconds` 1000), and eds-server on `redis+sentinel://`.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scripts.processes import EdsServer
from tests.failover.cluster import SentinelCluster, Writers

FAILOVERS = 3
# How a write is acknowledged -> EDS_REDIS_MIN_REPLICAS
ACKNOWLEDGED = {
    "once a replica holds it (`WAIT 1`, the default)": "auto",
    "once the primary holds it (`EDS_REDIS_MIN_REPLICAS=0`)": "0",
}


@dataclass
class FailoverFigures:
    workers: int
    seconds: float
    connections: int
    refusing_seconds: list[float] = field(default_factory=list)  # per failover: first write refused -> one acknowledged
    seconds_to_resume: list[float] = field(default_factory=list)  # per failover: the kill -> a write acknowledged
    # how a write is acknowledged -> what wrk measured in each round (bench.run.Load)
    writes: dict[str, list] = field(default_factory=lambda: {label: [] for label in ACKNOWLEDGED})


def figures(tmp: Path, workers: int, seconds: float, connections: int, rounds: int, wrk: Callable) -> FailoverFigures:
    """`wrk(url, seconds, connections, script)` is bench.run's, the load generator of the other write figures.
    The two ways of acknowledging run back to back in each round, so that both meet the same machine load."""
    directory = tmp / "failover"
    directory.mkdir()
    result = FailoverFigures(workers, seconds, connections)
    cluster = SentinelCluster(directory).start()
    try:
        for _ in range(rounds):
            for label, min_replicas in ACKNOWLEDGED.items():
                server = eds_server(directory, cluster.url, workers, min_replicas)
                try:
                    result.writes[label].append(wrk(server.url, seconds, connections, "upsert.lua"))
                finally:
                    server.stop()
        server = eds_server(directory, cluster.url, workers, "auto")
        writers = Writers([server.url]).start()
        try:
            for _ in range(FAILOVERS):
                failover = cluster.fail_over(writers)
                result.refusing_seconds.append(failover.refusing_seconds)
                result.seconds_to_resume.append(failover.seconds_to_resume)
                cluster.bring_back(failover.killed)
        finally:
            writers.stop()
            server.stop()
    finally:
        cluster.stop()
    return result


def eds_server(tmp: Path, store: str, workers: int, min_replicas: str) -> EdsServer:
    env = {"EDS_ACCESS_LOG": "false", "EDS_REDIS_MIN_REPLICAS": min_replicas}
    return EdsServer(tmp, store=store, workers=workers, env=env).start()


def spread(values: list[float], unit: str = "", digits: int = 1) -> str:
    def shown(value: float) -> str:
        return f"{value:,.{digits}f}{unit}"

    return f"{shown(statistics.median(values))} ({shown(min(values))}-{shown(max(values))})"


def render(figures: FailoverFigures) -> str:
    rows = [
        f"| {label} | {spread([load.rps for load in loads], digits=0)} "
        f"| {spread([load.p99_ms for load in loads])} | {sum(load.errors for load in loads)} |"
        for label, loads in figures.writes.items()
    ]
    return "\n".join(
        [
            "## Redis with Sentinel: failover and WAIT",
            "",
            "A primary, two replicas (AOF, `appendfsync always`) and three Sentinels on loopback",
            "(`down-after-milliseconds` 1000, `failover-timeout` 2000); eds-server on `redis+sentinel://`",
            f"with {figures.workers} workers.",
            "",
            f"{len(figures.refusing_seconds)} failovers (the primary SIGKILLed while 4 clients write, then",
            "brought back as a replica):",
            "",
            "- writes refused with 503, from the first refused to the first acknowledged again: "
            + spread(figures.refusing_seconds, " s"),
            "- from the kill to the first write acknowledged again: " + spread(figures.seconds_to_resume, " s"),
            "",
            f"Single-host upserts (`POST /edsservice/NAME/hosts`, 100 services), wrk with {figures.connections}",
            f"connections for {figures.seconds:g} s, {len(next(iter(figures.writes.values())))} rounds:",
            "",
            "| a write is acknowledged | writes/s | p99 ms | errors |",
            "|---|---|---|---|",
            *rows,
            "",
            "Waiting for a replica adds a round trip to it to each write (the replica acknowledges what it",
            "received). Most of the seconds of refused writes are `down-after-milliseconds` and the Sentinels'",
            "election and promotion.",
            "",
        ]
    )
