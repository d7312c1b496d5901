"""The write-and-wait figures of `make bench`: from a write acknowledged to its wait answering "in sync".

Simulated Envoys: Python clients on one asyncio loop, each on its own keep-alive
loopback connection, sending the captured Envoy 1.40 poll (77 KB) with its own
node id, `x-envoy-expected-rq-timeout-ms: 30000` and the version it holds, and
polling again as soon as it is answered (a real Envoy waits its refresh_delay
first, 0.1-0.2 s with the shipped bootstrap). Their polls are held by the
server until a write, so this is the long-poll fleet a deploy script waits on.

`python -m bench.propagation` runs it alone against a fresh server.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

SERVICE = "myservice"
FLEETS = (1, 10, 100)


@dataclass
class Fleet:
    envoys: int
    latencies_ms: list[float]  # a write acknowledged -> GET .../propagation?version=V&wait answering 200
    round_trips_ms: list[float]  # PUT ...?wait answered 200, from sending it


@dataclass
class HeldWaits:
    waits: int
    envoys: int
    cpu_percent_polls: float  # worker CPU while the polls alone are held and nothing changes
    cpu_percent: float  # the same with the waits held too
    released_after_s: float  # when the silent Envoy left the subscribed window and every wait ended in sync
    in_sync: int


# The version of the first poll: one nobody has, so it is answered at once with the current one.
FIRST_VERSION = "0" * 16


def _poll_template(body: dict, node: str) -> tuple[bytes, bytes]:
    """A node's whole poll request around its version_info (versions all have the same length), so
    that the client on the same cores spends no time re-encoding 77 KB per poll."""
    body["node"]["id"], body["version_info"] = node, FIRST_VERSION
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        "POST /v3/discovery:endpoints HTTP/1.1\r\nHost: eds_cluster\r\nContent-Type: application/json\r\n"
        f"x-envoy-expected-rq-timeout-ms: 30000\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    before, after = (head.encode() + payload).split(FIRST_VERSION.encode())
    return before, after


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = next((int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length")), 0)
    return status, await reader.readexactly(length) if length else b""


async def _envoy(port: int, body: dict, node: str, polls: int | None = None) -> None:
    """An Envoy that takes whatever it is sent and polls again at once; with `polls`, it stops after that many."""
    before, after = _poll_template(body, node)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    version = FIRST_VERSION
    try:
        while polls is None or polls > 0:
            writer.write(before + version.encode() + after)
            await writer.drain()
            status, answer = await _answer(reader)
            if status == 200:
                version = json.loads(answer)["version_info"]
            polls = None if polls is None else polls - 1
    finally:
        writer.close()


def _ports(index: int) -> list[dict]:
    return [{"ip_address": "10.0.0.1", "port": 8000 + index % 2}, {"ip_address": "10.0.0.2", "port": 8000}]


def fleet(server, captured: bytes, envoys: int, writes: int) -> Fleet:
    """`writes` writes, 0.3-0.7 s apart, to a service `envoys` simulated Envoys long-poll for."""
    body = json.loads(captured)
    url = f"{server.url}/edsservice/{SERVICE}"
    latencies, round_trips = [], []

    def write_then_wait(index: int) -> None:
        version = requests.put(url, json={"hosts": _ports(index)}).json()["version"]
        acknowledged = time.monotonic()
        answer = requests.get(f"{url}/propagation", params={"version": version, "wait": 30})
        assert answer.status_code == 200, answer.text
        assert answer.json()["have_it"] == envoys, answer.text
        latencies.append((time.monotonic() - acknowledged) * 1000)

    def write_and_wait(index: int) -> None:
        sent = time.monotonic()
        answer = requests.put(url, params={"wait": 30}, json={"hosts": _ports(index)})
        assert answer.status_code == 200 and answer.json()["propagation"]["have_it"] == envoys, answer.text
        round_trips.append((time.monotonic() - sent) * 1000)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: requests.put(url, json={"hosts": _ports(1)}).raise_for_status())
        tasks = [asyncio.create_task(_envoy(server.port, body, f"bench-envoy-{i}")) for i in range(envoys)]
        settled = await loop.run_in_executor(None, lambda: _every_one_has_it(url, envoys))
        assert settled, f"{envoys} simulated Envoys did not all show up in sync"
        for index in range(writes):
            await asyncio.sleep(random.uniform(0.3, 0.7))
            step = write_then_wait if index % 2 == 0 else write_and_wait
            await loop.run_in_executor(None, step, index)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    requests.delete(url)
    return Fleet(envoys, latencies, round_trips)


def _every_one_has_it(url: str, envoys: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = requests.get(f"{url}/propagation", params={"wait": 5}).json()
        if answer["have_it"] == envoys and answer["outcome"] == "in_sync":
            return True
    return False


def held_waits(server, captured: bytes, waits: int, envoys: int, subscribed_within: float) -> HeldWaits:
    """`waits` waits held at once, on a service `envoys` simulated Envoys hold polls for, all blocked by one
    more Envoy that polled once and went silent: nothing changes until it leaves the subscribed window."""
    body = json.loads(captured)
    url = f"{server.url}/edsservice/{SERVICE}"

    async def run() -> HeldWaits:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: requests.put(url, json={"hosts": _ports(0)}).raise_for_status())
        tasks = [asyncio.create_task(_envoy(server.port, body, f"bench-envoy-{i}")) for i in range(envoys)]
        assert await loop.run_in_executor(None, lambda: _every_one_has_it(url, envoys))
        version = (await loop.run_in_executor(None, lambda: requests.put(url, json={"hosts": _ports(1)}))).json()[
            "version"
        ]
        await _envoy(server.port, body, "bench-envoy-silent", polls=1)  # sent the new version, never back
        silent_since = time.monotonic()
        await asyncio.sleep(1.5)  # the fleet took it; the clients view's batches are written
        measure = min(3.0, (subscribed_within - 3) / 2)
        polls_only = await _cpu_percent(server, measure)
        answers = [
            loop.run_in_executor(
                None, lambda: requests.get(f"{url}/propagation", params={"version": version, "wait": 60})
            )
            for _ in range(waits)
        ]
        await asyncio.sleep(0.5)
        cpu_percent = await _cpu_percent(server, measure)
        ended = await asyncio.gather(*answers)
        released = time.monotonic() - silent_since
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        in_sync = sum(1 for answer in ended if answer.status_code == 200)
        return HeldWaits(waits, envoys, polls_only, cpu_percent, released, in_sync)

    with ThreadPoolExecutor(max_workers=waits + 4) as pool:  # one thread per wait held
        loop = asyncio.new_event_loop()
        loop.set_default_executor(pool)
        try:
            return loop.run_until_complete(run())
        finally:
            loop.close()
            requests.delete(url)


async def _cpu_percent(server, seconds: float) -> float:
    """The server's worker CPU over the next `seconds`, in percent of one core."""
    before, started = server.cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    return (server.cpu() - before) / (time.monotonic() - started) * 100


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{statistics.median(values):.0f} | {p90:.0f} | {ordered[-1]:.0f}"


def render(fleets: list[Fleet], held: HeldWaits, workers: int, subscribed_within: float) -> str:
    lines = [
        "## Write and wait",
        "",
        "From a registry write being acknowledged to `GET /edsservice/NAME/propagation?version=V&wait=30`",
        "answering 200 (every Envoy has it), and the round trip of a `PUT ...?wait=30` answered 200, for",
        "fleets of simulated long-polling Envoys (the captured 77 KB poll with its own node id and",
        "`x-envoy-expected-rq-timeout-ms: 30000`, each on its own connection, polling again as soon as it",
        f"is answered; a real Envoy first waits its refresh_delay, 0.1-0.2 s); one server, {workers} workers,",
        "sqlite; writes 0.3-0.7 s apart:",
        "",
        "| Envoys | writes then waits | median ms | p90 ms | max ms | writes ?wait | median ms | p90 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {f.envoys} | {len(f.latencies_ms)} | {_ms(f.latencies_ms)} | {len(f.round_trips_ms)} "
            f"| {_ms(f.round_trips_ms)} |"
            for f in fleets
        ],
        "",
        "Each Envoy's poll reporting the new version is news to the worker that takes it: its rows go to",
        "the store within ~10 ms (not at the next one-second batch), and that commit wakes every wait.",
        "With one Envoy, that is most of the time: the flusher gathers news for 10 ms, the batch's commit",
        "is an fsync, and each worker's watcher asks SQLite for commits every 10 ms.",
        "",
        f"{held.waits} waits held at once on {held.envoys} long-polling Envoys that have the version, blocked",
        f"by one more that polled once and went silent (subscribed_within {subscribed_within:g} s):",
        "",
        f"- worker CPU while nothing changed: {held.cpu_percent_polls:.1f}% of one core with the polls alone held, "
        f"{held.cpu_percent:.1f}% with the waits held too",
        f"- {held.in_sync} of {held.waits} answered 200 once the silent Envoy left the window, "
        f"{held.released_after_s:.1f} s after its last poll",
        "",
    ]
    return "\n".join(lines)


def figures(server, captured: bytes, writes: int, workers: int, subscribed_within: float) -> str:
    """Every figure of this section, rendered; `server` is a fresh eds-server (bench/run.py's)."""
    fleets = [fleet(server, captured, envoys, writes) for envoys in FLEETS]
    held = held_waits(server, captured, waits=50, envoys=100, subscribed_within=subscribed_within)
    return render(fleets, held, workers, subscribed_within)


def main() -> None:
    from .run import propagation_section  # bench/run.py imports this module

    with tempfile.TemporaryDirectory(prefix="eds-bench-") as name:
        print(propagation_section(Path(name), workers=2, writes=20))


if __name__ == "__main__":
    main()
