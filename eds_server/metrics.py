"""Prometheus metrics that add up across gunicorn workers.

Counters and histograms live in prometheus-client's multiprocess files (one
set per worker, summed at scrape time) when the server runner enabled that
mode before forking; in a single process (tests, `create_app` embedded) they
stay in memory. Facts about the registry and its clients (sizes, clients in
sync or stuck) are read from the store at scrape time, so every worker
answers the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from time import perf_counter

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import Metric

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Polls answer in well under a millisecond; writes commit with an fsync.
POLL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
HOLD_BUCKETS = (0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def enable_multiprocess(directory: str) -> None:
    """Keep metric values in files under `directory`; call in the master, before workers fork.

    prometheus-client picks where values live when it is first imported, which
    happened earlier (importing the package imports the app), so the choice
    is made again here, before any metric exists.
    """
    os.environ[MULTIPROCESS_DIR] = directory
    values.ValueClass = values.get_value_class()


def worker_gone(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters keep counting in the totals)."""
    multiprocess.mark_process_dead(pid)


def outcome(status: int) -> str:
    return str(status) if status in (200, 304) else f"{status // 100}xx"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.polls = Counter(
            "eds_polls",
            "Discovery polls answered, by API and outcome (200, 304, 4xx, 5xx)",
            ["api", "outcome"],
            registry=self.registry,
        )
        self.poll_seconds = Histogram(
            "eds_poll_duration_seconds",
            "Time to answer a poll (not counting time held)",
            ["api"],
            buckets=POLL_BUCKETS,
            registry=self.registry,
        )
        self.writes = Counter(
            "eds_writes",
            "Registry writes, by operation and outcome (HTTP status)",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.write_seconds = Histogram(
            "eds_write_duration_seconds",
            "Time to answer a registry write",
            ["operation"],
            buckets=WRITE_BUCKETS,
            registry=self.registry,
        )
        self.held = Gauge(
            "eds_polls_held",
            "Polls held right now, waiting for a change (long-poll)",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.hold_seconds = Histogram(
            "eds_poll_hold_seconds",
            "How long held polls were held",
            ["api"],
            buckets=HOLD_BUCKETS,
            registry=self.registry,
        )
        self._poll_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def poll_answered(self, api: str, status: int, started: float, held: float = 0.0) -> None:
        """On the hot path: the labelled children are looked up once per (api, outcome)."""
        key = (api, outcome(status))
        children = self._poll_children.get(key)
        if children is None:
            children = self._poll_children[key] = (
                self.polls.labels(*key),
                self.poll_seconds.labels(api),
                self.hold_seconds.labels(api),
            )
        children[0].inc()
        children[1].observe(perf_counter() - started - held)
        if held:
            children[2].observe(held)

    def held_count(self, delta: int) -> None:
        self.held.inc(delta)

    def write_answered(self, operation: str, status: int, started: float) -> None:
        self.writes.labels(operation, str(status)).inc()
        self.write_seconds.labels(operation).observe(perf_counter() - started)

    def render(self, live: Callable[[], Iterable[Metric]]) -> bytes:
        """The text exposition: every worker's counters and histograms, plus `live` facts read now."""
        scrape = CollectorRegistry(auto_describe=False)
        if MULTIPROCESS_DIR in os.environ:
            multiprocess.MultiProcessCollector(scrape)
        else:
            scrape.register(self.registry)
        scrape.register(_Live(live))
        return generate_latest(scrape)


class _Live:
    def __init__(self, collect: Callable[[], Iterable[Metric]]):
        self.collect = collect
