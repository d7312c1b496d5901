"""Five failovers in a row under a stream of writes: real Redis and Sentinel processes, two
eds-server replicas and a real Envoy on long-poll.

Each round SIGKILLs the primary while several clients write to both replicas, waits for writes to
resume on the primary Sentinel promotes, shows Envoy a change written after the failover, and brings
the killed server back as a replica. What must hold: every write answered 2xx is in the registry at
the end and no write was refused with 4xx; Envoy kept every endpoint all along; a host whose
heartbeats (TTL 1.5 s) were refused during each failover was never expired.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import requests

from scripts.processes import wait_until

from .test_sentinel_store import DATA_PASSWORD, SENTINEL_PASSWORD

ROUNDS = 5
WRITERS = 4
LEDGERS = 40  # the writes spread over this many services, so that no service grows large
STATIC_PORTS = [9001, 9002]
HEARTBEAT = {"ip_address": "127.0.0.1", "port": 9100, "ttl": 1.5}
HEARTBEAT_EVERY = 0.25


@dataclass(frozen=True)
class Answer:
    started: float  # monotonic
    status: int  # 0: no answer at all
    service: str
    port: int


@dataclass
class Writers:
    """Clients that each register a new host on every write, alternating between the replicas."""

    urls: list[str]
    answers: list[Answer] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    ports: itertools.count = field(default_factory=lambda: itertools.count(20000))

    def start(self) -> Writers:
        self.threads = [threading.Thread(target=self._write, args=(offset,), daemon=True) for offset in range(WRITERS)]
        for thread in self.threads:
            thread.start()
        return self

    def _write(self, offset: int) -> None:
        with requests.Session() as session:
            for index in itertools.count(offset):
                if self.stopping.is_set():
                    return
                port = next(self.ports)
                service = f"ledger-{port % LEDGERS}"
                started = time.monotonic()
                try:
                    status = session.post(
                        f"{self.urls[index % 2]}/edsservice/{service}/hosts",
                        json={"ip_address": "127.0.0.2", "port": port},
                        timeout=10,
                    ).status_code
                except requests.RequestException:
                    status = 0
                self.answers.append(Answer(started, status, service, port))
                self.stopping.wait(0.05)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)

    def refused_after(self, moment: float) -> Answer | None:
        return next((a for a in list(self.answers) if a.started >= moment and a.status == 503), None)

    def accepted_after(self, moment: float) -> Answer | None:
        return next((a for a in list(self.answers) if a.started >= moment and 200 <= a.status < 300), None)


class Repeating:
    """`task` every `every` seconds in a thread until stopped."""

    def __init__(self, every: float, task):
        self.every, self.task = every, task
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for index in itertools.count():
            if self.stopping.wait(self.every):
                return
            try:
                self.task(index)
            except requests.RequestException:
                pass  # what it saw is the task's to keep

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)


def test_five_failovers_under_writes_lose_no_acknowledged_write(sentinel_cluster, eds_server, envoy_for):
    cluster = sentinel_cluster(password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD)
    replicas = [eds_server(store=cluster.url), eds_server(store=cluster.url)]
    urls = [replica.url for replica in replicas]
    envoy = envoy_for(*replicas)  # the shipped bootstrap: long-poll
    myservice = f"{urls[0]}/edsservice/myservice"
    put = requests.put(myservice, json={"hosts": [{"ip_address": "127.0.0.1", "port": p} for p in STATIC_PORTS]})
    assert put.status_code == 201, put.text

    def heartbeat(index: int) -> None:
        requests.post(f"{urls[index % 2]}/edsservice/myservice/hosts", json=HEARTBEAT, timeout=5)

    expected = [*STATIC_PORTS, HEARTBEAT["port"]]
    beats = Repeating(HEARTBEAT_EVERY, heartbeat)
    envoy.wait_for_ports(expected)
    samples: list[list[int]] = []
    watcher = Repeating(0.1, lambda index: samples.append(envoy.host_ports()))
    writers = Writers(urls).start()
    resumed_after: list[float] = []
    try:
        for round_index in range(ROUNDS):
            wait_until(lambda: writers.accepted_after(time.monotonic() - 0.3), 10, what="writes flowing")
            killed_at = time.monotonic()
            old = cluster.kill_primary()
            first_refusal = wait_until(
                lambda killed_at=killed_at: writers.refused_after(killed_at), 10, what="a write refused (503)"
            )
            resumed = wait_until(
                lambda since=first_refusal.started: writers.accepted_after(since), 30, 0.02, what="writes resuming"
            )
            resumed_after.append(resumed.started - killed_at)
            assert cluster.primary is not old
            # A change written after the failover reaches Envoy through the held polls.
            # (Retried like any client: right after a failover the one replica left may still be re-attaching.)
            port = 9200 + round_index
            wait_until(
                lambda port=port: requests.post(
                    f"{myservice}/hosts", json={"ip_address": "127.0.0.1", "port": port}, timeout=5
                ).ok,
                10,
                0.1,
                what="a change written after the failover",
            )
            expected.append(port)
            envoy.wait_for_ports(expected)
            cluster.bring_back(old)
    finally:
        writers.stop()
        beats.stop()
        watcher.stop()

    statuses = sorted({answer.status for answer in writers.answers})
    assert not [status for status in statuses if 400 <= status < 500], statuses
    registered = {
        (service["name"], host["port"])
        for service in requests.get(f"{urls[1]}/edsservice", timeout=10).json()
        for host in service["hosts"]
    }
    acknowledged = [a for a in writers.answers if 200 <= a.status < 300]
    lost = [a for a in acknowledged if (a.service, a.port) not in registered]
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged writes lost, the first: {lost[0]}"
    # Envoy never lost an endpoint, the heartbeating host included.
    missing = [sample for sample in samples if not set(STATIC_PORTS + [HEARTBEAT["port"]]) <= set(sample)]
    assert not missing, f"{len(missing)} of {len(samples)} samples of Envoy's hosts miss one: {missing[:5]}"
    assert envoy.stat("update_failure") == 0
    assert ("myservice", HEARTBEAT["port"]) in registered
    logs = "".join(replica.log_path.read_text() for replica in replicas)
    assert "a failover is under way" in logs
    assert DATA_PASSWORD not in logs and SENTINEL_PASSWORD not in logs
    refused = sum(a.status == 503 for a in writers.answers)
    print(
        f"\n{ROUNDS} failovers: writes resumed {', '.join(f'{s:.1f}' for s in resumed_after)} s after the kill; "
        f"{len(acknowledged)} writes acknowledged, {refused} refused with 503, statuses {statuses}"
    )
