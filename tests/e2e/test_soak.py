"""Load and faults against the real server: several gunicorn workers, one sqlite file.

Concurrent writers and Envoy-shaped pollers (the captured 77 KB poll) for
SOAK_SECONDS (a few seconds in the suite, minutes with `make soak`): no 5xx,
every acknowledged write in the final state, worker memory reported (and
bounded generously). Then workers killed with SIGKILL in the middle of writes:
no acknowledged write lost, and sqlite's integrity check passes afterwards.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from scripts.processes import rss_kb, wait_until, worker_pids
from tests.helpers.captured import load_fixture

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "6"))
TOKEN = "soak-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHARED = "soak-shared"
# Memory a worker may gain over a soak before it counts as a leak; generous, since a
# short soak still warms caches. `make soak` prints the figures to judge by.
RSS_GROWTH_BOUND_KB = 64 * 1024


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def registry(server) -> dict[str, dict[tuple[str, int], int]]:
    """The final state as the API shows it: service -> {(ip, port): weight}."""
    services = requests.get(f"{server.url}/edsservice", headers=AUTH, timeout=10).json()
    return {
        s["name"]: {(h["ip_address"], h["port"]): h["tags"]["load_balancing_weight"] for h in s["hosts"]}
        for s in services
    }


@dataclass
class Tally:
    """What the load threads saw; each thread writes only its own ledger entries."""

    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str, status: int) -> None:
        with self.lock:
            self.statuses[(kind, status)] += 1

    def error(self, kind: str, error: Exception) -> None:
        with self.lock:
            self.errors[(kind, type(error).__name__)] += 1

    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status >= 500)


class Writer(threading.Thread):
    """The only writer of service soak-<n>; also heartbeats its own hosts into the shared service.

    `expected` is what the registry must hold for its service after every acknowledged
    write; `shared` the hosts it added to the shared service (never removed).
    """

    def __init__(self, n: int, server, tally: Tally, deadline: float):
        super().__init__(name=f"writer-{n}", daemon=True)
        self.n, self.server, self.tally, self.deadline = n, server, tally, deadline
        self.name_ = f"soak-{n}"
        self.random = random.Random(n)
        self.expected: dict[tuple[str, int], int] = {}
        self.shared: set[tuple[str, int]] = set()
        self.session = requests.Session()
        self.session.headers.update(AUTH)

    def host(self, port: int, weight: int) -> dict:
        return {"ip_address": f"10.{self.n}.0.1", "port": port, "tags": {"load_balancing_weight": weight}}

    def call(self, method: str, path: str, body=None) -> int | None:
        try:
            response = self.session.request(method, f"{self.server.url}{path}", json=body, timeout=30)
        except requests.RequestException as error:
            self.tally.error("write", error)
            return None
        self.tally.count("write", response.status_code)
        return response.status_code

    def step(self) -> None:
        base = f"/edsservice/{self.name_}"
        action = self.random.choice(("upsert", "upsert", "patch", "delete", "put", "shared"))
        port, weight = self.random.randrange(1000, 1040), self.random.randrange(1, 100)
        if action == "upsert":
            if self.call("POST", f"{base}/hosts", self.host(port, weight)) in (200, 201):
                self.expected[(f"10.{self.n}.0.1", port)] = weight
        elif action == "patch" and self.expected:
            key = self.random.choice(sorted(self.expected))
            body = {"tags": {"load_balancing_weight": weight}}
            if self.call("PATCH", f"{base}/hosts/{key[0]}:{key[1]}", body) == 200:
                self.expected[key] = weight
        elif action == "delete" and self.expected:
            key = self.random.choice(sorted(self.expected))
            if self.call("DELETE", f"{base}/hosts/{key[0]}:{key[1]}") == 204:
                del self.expected[key]
        elif action == "put":
            ports = self.random.sample(range(1000, 1040), self.random.randrange(0, 8))
            hosts = [self.host(p, weight) for p in ports]
            if self.call("PUT", base, {"hosts": hosts}) in (200, 201):
                self.expected = {(f"10.{self.n}.0.1", p): weight for p in ports}
        elif action == "shared":
            host = {"ip_address": f"10.200.{self.n}.{len(self.shared) % 250}", "port": 2000 + len(self.shared)}
            if self.call("POST", f"/edsservice/{SHARED}/hosts", host) in (200, 201):
                self.shared.add((host["ip_address"], host["port"]))

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            self.step()


class Poller(threading.Thread):
    """An Envoy: the captured 77 KB poll, for one service, holding the version it was last sent."""

    def __init__(self, n: int, server, tally: Tally, deadline: float, names: list[str]):
        super().__init__(name=f"poller-{n}", daemon=True)
        self.server, self.tally, self.deadline, self.names = server, tally, deadline, names
        captured = load_fixture("envoy-1.40-eds-poll-request.json")
        self.body = captured["body"]
        self.headers = {k: v for k, v in captured["headers"].items() if k not in ("host", "content-length")}
        self.held: dict[str, str] = {}
        self.random = random.Random(1000 + n)
        self.session = requests.Session()
        self.polls = 0

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            name = self.random.choice(self.names)
            body = {**self.body, "resource_names": [name]}
            if name in self.held:
                body["version_info"] = self.held[name]
            else:
                body.pop("version_info", None)
            try:
                response = self.session.post(
                    f"{self.server.url}/v3/discovery:endpoints", data=json.dumps(body), headers=self.headers, timeout=30
                )
            except requests.RequestException as error:
                self.tally.error("poll", error)
                continue
            self.polls += 1
            self.tally.count("poll", response.status_code)
            if response.status_code == 200:
                answer = response.json()
                assert [r["cluster_name"] for r in answer["resources"]] == [name]
                self.held[name] = answer["version_info"]


@pytest.mark.timeout(SOAK_SECONDS + 120)
def test_soak_concurrent_writers_and_pollers_lose_nothing(eds_server, tmp_path):
    server = eds_server(workers=4, env={"EDS_API_TOKENS": TOKEN})
    master = server.process.pid
    tally = Tally()
    names = [f"soak-{n}" for n in range(4)] + [SHARED]
    # Warm up every worker (imports, caches) before the first memory sample.
    warm_deadline = time.monotonic() + 1.0
    warm = [Poller(100 + n, server, Tally(), warm_deadline, names) for n in range(4)]
    for thread in warm:
        thread.start()
    for thread in warm:
        thread.join()
    workers = worker_pids(master)
    rss_before = {pid: rss_kb(pid) for pid in workers}

    started = time.monotonic()
    deadline = started + SOAK_SECONDS
    writers = [Writer(n, server, tally, deadline) for n in range(4)]
    pollers = [Poller(n, server, tally, deadline, names) for n in range(4)]
    for thread in writers + pollers:
        thread.start()
    for thread in writers + pollers:
        thread.join(SOAK_SECONDS + 60)
    elapsed = time.monotonic() - started
    rss_after = {pid: rss_kb(pid) for pid in worker_pids(master)}

    writes = sum(n for (kind, _), n in tally.statuses.items() if kind == "write")
    polls = sum(n for (kind, _), n in tally.statuses.items() if kind == "poll")
    print(f"\nsoak {elapsed:.1f}s, 4 workers: {writes} writes ({writes / elapsed:.0f}/s), {polls} polls "
          f"of 77 KB ({polls / elapsed:.0f}/s); statuses {dict(sorted(tally.statuses.items()))}; "
          f"errors {dict(tally.errors)}")  # fmt: skip
    for pid in sorted(set(rss_before) | set(rss_after)):
        print(f"  worker {pid}: RSS {rss_before.get(pid, 0) / 1024:.1f} MB -> {rss_after.get(pid, 0) / 1024:.1f} MB")

    assert tally.server_errors() == 0 and not tally.errors
    assert writes > 0 and polls > 0
    final = registry(server)
    for writer in writers:
        assert final.get(writer.name_, {}) == writer.expected, f"{writer.name_}: acknowledged writes lost"
    assert set(final[SHARED]) == set().union(*(w.shared for w in writers)), "a concurrent heartbeat was lost"
    assert set(rss_after) == set(rss_before), "a worker was replaced during the soak"
    for pid, before in rss_before.items():
        assert rss_after[pid] - before < RSS_GROWTH_BOUND_KB, f"worker {pid} grew {rss_after[pid] - before} kB"
    server.stop()
    assert integrity(tmp_path / "registry.db") == "ok"


def test_sigkill_of_workers_mid_write_loses_no_acknowledged_write(eds_server, tmp_path):
    server = eds_server(workers=3, env={"EDS_API_TOKENS": TOKEN})
    master = server.process.pid
    acknowledged: set[tuple[str, int]] = set()
    unknown: set[tuple[str, int]] = set()
    statuses: Counter = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def write(n: int) -> None:
        count = 0
        while not stop.is_set() and count < 5000:
            host = {"ip_address": f"10.{n}.{count // 250}.{count % 250 + 1}", "port": 80}
            count += 1
            key = (host["ip_address"], host["port"])
            try:
                # A new connection for each write, so that writes land on every worker.
                response = requests.post(
                    f"{server.url}/edsservice/killed-{n % 2}/hosts",
                    json=host,
                    headers={**AUTH, "Connection": "close"},
                    timeout=30,
                )
            except requests.RequestException:
                with lock:
                    unknown.add(key)  # the worker died with it: it may or may not have committed
                continue
            with lock:
                statuses[response.status_code] += 1
                if response.status_code in (200, 201):
                    acknowledged.add(key)

    writers = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(4)]
    for thread in writers:
        thread.start()
    killed = []
    for _ in range(3):
        time.sleep(0.7)
        victim = random.choice(worker_pids(master))
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
        wait_until(
            lambda v=victim: len(worker_pids(master)) == 3 and v not in worker_pids(master),
            timeout=20,
            what="gunicorn replacing the killed worker",
        )
    time.sleep(0.5)
    stop.set()
    for thread in writers:
        thread.join(60)

    final = registry(server)
    present = set(final.get("killed-0", {})) | set(final.get("killed-1", {}))
    print(f"\nSIGKILLed workers {killed}: {len(acknowledged)} acknowledged writes, {len(unknown)} cut off "
          f"({len(unknown & present)} of them committed); statuses {dict(statuses)}")  # fmt: skip
    assert len(acknowledged) > 50
    assert not any(status >= 500 for status in statuses)
    assert acknowledged <= present, f"acknowledged writes lost: {sorted(acknowledged - present)[:5]}"
    assert present <= acknowledged | unknown, "a host nobody wrote appeared"
    server.stop()
    assert integrity(tmp_path / "registry.db") == "ok"
