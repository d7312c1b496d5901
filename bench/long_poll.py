"""The long-poll figures of `make bench`: write-to-Envoy latency, thousands of held polls, their release."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from eds_server.xds.resources import PATH_OF, V3
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


@dataclass
class HeldClients:
    clients: int
    held: int
    rss_mb_before: float
    rss_mb_held: float
    cpu_percent_held: float
    release_ms: float
    released_ok: int


async def _held_poll(port: int, request: bytes, answers: list, ready: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        ready.set()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        )
        body = await reader.readexactly(length)
        answers.append((head.split(b" ", 2)[1], time.monotonic(), json.loads(body).get("version_info")))
    finally:
        writer.close()


def held_clients(server, clients: int, captured: bytes, version: str, write) -> HeldClients:
    """`clients` Envoy-shaped polls held at once on `server`; then one `write()` releases them."""

    def held_now() -> float:
        text = requests.get(f"{server.url}/metrics").text
        return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("eds_polls_held "))

    body = json.loads(captured)
    body["version_info"] = version

    def request(index: int) -> bytes:
        body["node"]["id"] = f"bench-envoy-{index}"
        payload = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST {PATH_OF[V3]} HTTP/1.1\r\nHost: eds_cluster\r\nContent-Type: application/json\r\n"
            f"x-envoy-expected-rq-timeout-ms: 30000\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        return head.encode() + payload

    requests_bytes = [request(i) for i in range(clients)]
    rss_before = sum(server.rss())

    async def run() -> HeldClients:
        answers: list = []
        events = [asyncio.Event() for _ in range(clients)]
        tasks = []
        for index in range(clients):
            tasks.append(asyncio.create_task(_held_poll(server.port, requests_bytes[index], answers, events[index])))
            if index % 100 == 99:
                await asyncio.sleep(0.05)  # open connections in waves, as a fleet comes up
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 60)
        deadline = time.monotonic() + 60
        while held_now() < clients and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        held = held_now()
        cpu_before, measured_from = server.cpu(), time.monotonic()
        await asyncio.sleep(5)
        cpu_percent = (server.cpu() - cpu_before) / (time.monotonic() - measured_from) * 100
        rss_held = sum(server.rss())
        written = time.monotonic()
        new_version = await asyncio.get_running_loop().run_in_executor(None, write)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        last = max(at for _, at, _ in answers)
        ok = sum(1 for status, _, got in answers if status == b"200" and got == new_version)
        return HeldClients(clients, int(held), rss_before, rss_held, cpu_percent, (last - written) * 1000, ok)

    return asyncio.run(run())
