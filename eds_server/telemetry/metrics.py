"""Prometheus metrics that add up across gunicorn workers.

Counters and histograms live in prometheus-client's multiprocess files (one
set per worker, summed at scrape time) when the server runner enabled that
mode before forking; in a single process (tests, `create_app` embedded) they
stay in memory. Polls, the hot path, are tallied in the worker's memory and
written to those files in one go every FLUSH_INTERVAL, and so is the number of
polls held. Facts about the registry and its clients (sizes, clients in sync
or stuck) are read from the store at scrape time, so every worker answers the
same.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections import Counter as Tally
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
# A push: rendering (cached per service version) and handing the message to grpc.
PUSH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# How often a worker writes its polls' figures to the shared files (a scrape of
# this worker writes them first; other workers' polls show up to this much later).
FLUSH_INTERVAL = 1.0
# Services with a subscriptions series of their own, per gRPC process. A series, once made, lasts
# as long as the process (prometheus-client cannot remove one in multiprocess mode; a scrape leaves
# out those at 0), so names past this, subscribed by streams that churn through names nobody
# registered, are counted together under OTHER_SERVICES: five times what one stream may subscribe
# to, a few MB of metrics files at most.
MAX_SUBSCRIPTION_SERIES = 50_000
OTHER_SERVICES = "(other services)"


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
        self.collectors = CollectorRegistry()
        self.polls = Counter(
            "eds_polls",
            "Discovery polls answered, by API and outcome (200, 304, 4xx, 5xx)",
            ["api", "outcome"],
            registry=self.collectors,
        )
        self.poll_seconds = Histogram(
            "eds_poll_duration_seconds",
            "Time to answer a poll (not counting time held)",
            ["api"],
            buckets=POLL_BUCKETS,
            registry=self.collectors,
        )
        self.writes = Counter(
            "eds_writes",
            "Registry writes, by operation and outcome (HTTP status)",
            ["operation", "outcome"],
            registry=self.collectors,
        )
        self.write_seconds = Histogram(
            "eds_write_duration_seconds",
            "Time to answer a registry write",
            ["operation"],
            buckets=WRITE_BUCKETS,
            registry=self.collectors,
        )
        self.held = Gauge(
            "eds_polls_held",
            "Polls held right now, waiting for a change (long-poll)",
            multiprocess_mode="livesum",
            registry=self.collectors,
        )
        self.hold_seconds = Histogram(
            "eds_poll_hold_seconds",
            "How long held polls were held",
            ["api"],
            buckets=HOLD_BUCKETS,
            registry=self.collectors,
        )
        # gRPC streams; `mode` is eds-sotw, eds-delta, ads-sotw or ads-delta.
        self.grpc_streams = Gauge(
            "eds_grpc_streams", "Open gRPC xDS streams", ["mode"], multiprocess_mode="livesum", registry=self.collectors
        )
        self.grpc_subscriptions = Gauge(
            "eds_grpc_subscriptions",
            "Open gRPC streams subscribed to each service",
            ["service", "mode"],
            multiprocess_mode="livesum",
            registry=self.collectors,
        )
        self.grpc_pushes = Counter(
            "eds_grpc_pushes", "Responses pushed on gRPC streams", ["mode"], registry=self.collectors
        )
        self.grpc_resources_pushed = Counter(
            "eds_grpc_resources_pushed", "ClusterLoadAssignments in those responses", ["mode"], registry=self.collectors
        )
        self.grpc_acks = Counter("eds_grpc_acks", "Responses Envoy ACKed", ["mode"], registry=self.collectors)
        self.grpc_nacks = Counter(
            "eds_grpc_nacks", "Responses Envoy NACKed (rejected, with error_detail)", ["mode"], registry=self.collectors
        )
        self.grpc_push_seconds = Histogram(
            "eds_grpc_push_duration_seconds",
            "Time to build a push and hand it to the stream",
            ["mode"],
            buckets=PUSH_BUCKETS,
            registry=self.collectors,
        )
        self._subscription_series: set[str] = set()
        self._lock = threading.Lock()
        self._unwritten = _PollFigures()
        self._grpc_unwritten = _GrpcFigures()
        # Polls this worker holds now, and as last written to the shared gauge: a held poll
        # starting or ending is a change in memory, the gauge is written with the other figures.
        self._held_now = self._held_written = 0

    def poll_answered(self, api: str, status: int, started: float, held: float = 0.0) -> None:
        """On the hot path: noted in memory, written to the shared files by `flush`.

        In multiprocess mode every count and observation is a locked write to a
        memory-mapped file: three per poll were a share of an up-to-date poll's
        cost that showed in its throughput, where adding to this worker's tally
        is nearly free (docs/PERFORMANCE.md#poll-metrics).
        """
        with self._lock:
            self._unwritten.add(api, status, perf_counter() - started - held, held)

    def flush(self) -> None:
        """Write the polls noted since the last flush (every FLUSH_INTERVAL, before a scrape, at exit)."""
        with self._lock:
            figures, self._unwritten = self._unwritten, _PollFigures()
            if self._held_now != self._held_written:  # (under the lock: a later count is never overwritten)
                self.held.set(self._held_now)
                self._held_written = self._held_now
        for (api, status), count in figures.polls.items():
            self.polls.labels(api, outcome(status)).inc(count)
        for histogram, observed in ((self.poll_seconds, figures.seconds), (self.hold_seconds, figures.held)):
            for api, observations in observed.items():
                observations.write_to(histogram.labels(api))
        with self._lock:
            grpc_figures, self._grpc_unwritten = self._grpc_unwritten, _GrpcFigures()
        for counter, tally in (
            (self.grpc_pushes, grpc_figures.pushes),
            (self.grpc_resources_pushed, grpc_figures.resources),
            (self.grpc_acks, grpc_figures.acks),
            (self.grpc_nacks, grpc_figures.nacks),
        ):
            for mode, count in tally.items():
                counter.labels(mode).inc(count)
        for mode, observations in grpc_figures.seconds.items():
            observations.write_to(self.grpc_push_seconds.labels(mode))

    def held_count(self, delta: int) -> None:
        """+1 / -1 as a poll starts or stops being held; written to the shared gauge by `flush`."""
        with self._lock:
            self._held_now += delta

    def grpc_stream_opened(self, mode: str) -> None:
        self.grpc_streams.labels(mode).inc()

    def grpc_stream_closed(self, mode: str) -> None:
        self.grpc_streams.labels(mode).dec()

    def grpc_subscribed(self, mode: str, added, removed) -> None:
        for name in added:
            self.grpc_subscriptions.labels(self._subscription_series_of(name), mode).inc()
        for name in removed:
            self.grpc_subscriptions.labels(self._subscription_series_of(name), mode).dec()

    def _subscription_series_of(self, name: str) -> str:
        series = self._subscription_series
        if name in series:
            return name
        if len(series) < MAX_SUBSCRIPTION_SERIES:
            series.add(name)
            return name
        return OTHER_SERVICES

    # Pushes, ACKs and NACKs, like polls, are noted in memory and written by `flush`: one write
    # reaching 10,000 streams is 10,000 pushes and as many ACKs within a second.
    def grpc_pushed(self, mode: str, resources: int, seconds: float) -> None:
        with self._lock:
            figures = self._grpc_unwritten
            figures.pushes[mode] += 1
            figures.resources[mode] += resources
            (figures.seconds.get(mode) or figures.seconds.setdefault(mode, _Observed(PUSH_BUCKETS))).add(seconds)

    def grpc_acked(self, mode: str) -> None:
        with self._lock:
            self._grpc_unwritten.acks[mode] += 1

    def grpc_nacked(self, mode: str) -> None:
        with self._lock:
            self._grpc_unwritten.nacks[mode] += 1

    def write_answered(self, operation: str, status: int, started: float) -> None:
        self.writes.labels(operation, str(status)).inc()
        self.write_seconds.labels(operation).observe(perf_counter() - started)

    def render(self, live: Callable[[], Iterable[Metric]]) -> bytes:
        """The text exposition: every worker's counters and histograms, plus `live` facts read now."""
        self.flush()
        scrape = CollectorRegistry(auto_describe=False)
        if MULTIPROCESS_DIR in os.environ:
            scrape.register(_WithoutUnsubscribed(multiprocess.MultiProcessCollector(None)))
        else:
            scrape.register(_WithoutUnsubscribed(self.collectors))
        scrape.register(_Live(live))
        return generate_latest(scrape)


class _WithoutUnsubscribed:
    """The collected metrics less the subscriptions series at 0: a service no stream watches now."""

    def __init__(self, collector):
        self.collector = collector

    def collect(self) -> Iterable[Metric]:
        for metric in self.collector.collect():
            if metric.name == "eds_grpc_subscriptions":
                metric.samples = [sample for sample in metric.samples if sample.value]
            yield metric


class _Live:
    def __init__(self, collect: Callable[[], Iterable[Metric]]):
        self.collect = collect


class _Observed:
    """Observations of one histogram child not yet written: a count per bucket (+Inf last) and their sum."""

    __slots__ = ("bounds", "buckets", "total")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1  # the first bound >= value, as `observe` picks
        self.total += value

    def write_to(self, child: Histogram) -> None:
        """What `observe` does for each observation, at once: prometheus-client has no call for
        that, so this adds to the child's bucket and sum values (a file write each, not per observation)."""
        child._sum.inc(self.total)
        for value, count in zip(child._buckets, self.buckets, strict=True):
            if count:
                value.inc(count)


class _PollFigures:
    """The polls one worker answered since its last flush."""

    def __init__(self) -> None:
        self.polls: Tally[tuple[str, int]] = Tally()
        self.seconds: dict[str, _Observed] = {}
        self.held: dict[str, _Observed] = {}

    def add(self, api: str, status: int, seconds: float, held: float) -> None:
        self.polls[api, status] += 1
        (self.seconds.get(api) or self.seconds.setdefault(api, _Observed(POLL_BUCKETS))).add(seconds)
        if held:
            (self.held.get(api) or self.held.setdefault(api, _Observed(HOLD_BUCKETS))).add(held)


class _GrpcFigures:
    """The pushes, ACKs and NACKs of one gRPC process since its last flush, by stream mode."""

    def __init__(self) -> None:
        self.pushes: Tally[str] = Tally()
        self.resources: Tally[str] = Tally()
        self.acks: Tally[str] = Tally()
        self.nacks: Tally[str] = Tally()
        self.seconds: dict[str, _Observed] = {}
