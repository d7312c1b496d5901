"""The long-poll figures of `make bench`: write-to-Envoy latency (thousands of held polls: bench/held_polls.py)."""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from scripts.envoy import Upstream, start_envoy

SERVICE = "myservice"


@dataclass
class WriteToEnvoy:
    mode: str
    latencies_ms: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def write_to_envoy(tmp: Path, server_url: str, server_port: int, writes: int, **api_config) -> list[float]:
    """Milliseconds from each registry write being acknowledged to Envoy holding the new host."""
    alpha, beta = Upstream("alpha", tmp).start(), Upstream("beta", tmp).start()
    envoy = start_envoy(tmp, [server_port], **api_config)
    latencies = []
    try:
        requests.put(f"{server_url}/edsservice/{SERVICE}", json={"hosts": [alpha.host()]}).raise_for_status()
        envoy.wait_for_ports([alpha.port], timeout=10)
        for index in range(writes):
            upstream = beta if index % 2 == 0 else alpha
            # Writes 0.3-0.7 s apart, unsynchronised with Envoy. One landing within refresh_delay of
            # the previous answer (no poll held yet) would wait for Envoy's next poll.
            time.sleep(random.uniform(0.3, 0.7))
            requests.put(f"{server_url}/edsservice/{SERVICE}", json={"hosts": [upstream.host()]}).raise_for_status()
            written = time.monotonic()
            deadline = written + 10
            while envoy.host_ports() != [upstream.port]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Envoy did not take write {index} within 10 s")
                time.sleep(0.001)
            latencies.append((time.monotonic() - written) * 1000)
        assert envoy.stat("update_failure") == 0 and envoy.stat("update_rejected") == 0
    finally:
        envoy.stop()
        alpha.stop()
        beta.stop()
    return latencies
