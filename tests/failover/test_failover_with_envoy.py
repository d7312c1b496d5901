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

import requests

from scripts.processes import wait_until

from .cluster import Writers
from .test_sentinel_store import DATA_PASSWORD, SENTINEL_PASSWORD

ROUNDS = 5
STATIC_PORTS = [9001, 9002]
HEARTBEAT = {"ip_address": "127.0.0.1", "port": 9100, "ttl": 1.5}
HEARTBEAT_EVERY = 0.25


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
            failover = cluster.fail_over(writers)
            resumed_after.append(failover.seconds_to_resume)
            assert cluster.primary is not failover.killed
            # A change written after the failover reaches Envoy through the held polls.
            # (Retried like any client: right after a failover the one replica left may still be re-attaching.)
            port = 9200 + round_index
            wait_until(
                lambda port=port: (
                    requests.post(f"{myservice}/hosts", json={"ip_address": "127.0.0.1", "port": port}, timeout=5).ok
                ),
                10,
                0.1,
                what="a change written after the failover",
            )
            expected.append(port)
            envoy.wait_for_ports(expected)
            cluster.bring_back(failover.killed)
    finally:
        writers.stop()
        beats.stop()
        watcher.stop()

    statuses = sorted({answer.status for answer in writers.answers})
    assert not [status for status in statuses if 400 <= status < 500], statuses
    # Every refusal says why: a failover under way, or a write too few replicas hold to survive one.
    unexplained = {a.message for a in writers.answers if a.status == 503 and "failover" not in a.message}
    assert not unexplained, unexplained
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
