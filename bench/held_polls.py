"""The section of `make bench` on thousands of held long-polls: what holding them costs, and how fast one
write releases them all.

`--held-clients` simulated Envoys (10,000 by default) poll one eds-server (default settings, sqlite,
`--workers` workers) each on its own keep-alive connection, with the captured 77 KB Envoy poll under
a node id of its own, the current version and `x-envoy-expected-rq-timeout-ms: 30000`, so the server
holds every poll. A simulated Envoy whose hold ends (304) polls again at once, as Envoy does after
its refresh_delay. Measured: the workers' memory per held poll, their CPU while nothing changes, and
the time from one write being acknowledged to the last Envoy reading the new version.

The Envoys are one separate process (`python -m bench.held_polls PORT COUNT VERSION`) driving raw
non-blocking sockets with epoll, so that answering them is not slowed by the client: it reports the
CPU it spent while the answers arrived, which shows whether it kept up (it shares the two cores).
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from scripts.processes import worker_pids

from .run import POLL, SERVICE, captured_body, eds_server, hosts, load_average

NODE_PLACEHOLDER = "held-poll-node-placeholder"
# Connections being opened and sent their poll at once: a fleet comes up in waves, and the
# listening socket's backlog must not overflow.
OPENING_AT_ONCE = 200
CLIENT_PATIENCE = 120.0  # seconds the client runs at most
READ_SIZE = 65536
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
VERSION_INFO = re.compile(rb'"version_info":"([^"]*)"')


@dataclass
class HeldPolls:
    clients: int
    held: int
    setup_seconds: float
    rss_mb_before: float
    rss_mb_held: float
    idle_seconds: float
    idle_cpu_percent: float
    idle_repolls: int  # polls sent again in the idle window (holds that ran out)
    first_answer_ms: float
    release_ms: float
    released_ok: int
    release_cpu_us: tuple[float, float]  # worker CPU per released poll: user, system
    client_cpu_percent: float  # of the release window: near 100 would mean the client was the limit
    load_average: tuple[str, str]  # before and after

    @property
    def kb_per_held_poll(self) -> float:
        return (self.rss_mb_held - self.rss_mb_before) * 1024 / max(1, self.held)


def held_now(url: str) -> float:
    text = requests.get(f"{url}/metrics").text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("eds_polls_held "))


def user_and_system_seconds(master_pid: int) -> tuple[float, float]:
    """CPU time used so far by the gunicorn workers, user and system apart."""
    user = system = 0
    for pid in worker_pids(master_pid):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    ticks = os.sysconf("SC_CLK_TCK")
    return user / ticks, system / ticks


def measure(tmp: Path, args) -> HeldPolls:
    load_before = load_average()
    server = eds_server(tmp, tmp / "held-polls.db", args.workers, settings={})
    try:
        requests.put(f"{server.url}/edsservice/{SERVICE}", json={"hosts": hosts(10)}).raise_for_status()
        version = requests.post(server.url + POLL, data=captured_body(None)).json()["version_info"]
        rss_before = sum(server.rss())
        started = time.monotonic()
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.held_polls", str(server.port), str(args.held_clients), version],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        try:
            sent = json.loads(client.stdout.readline() or "{}")
            if sent.get("sent") != args.held_clients:
                raise RuntimeError(f"the simulated Envoys could not all poll: {sent}")
            deadline = time.monotonic() + 60
            while held_now(server.url) < args.held_clients and time.monotonic() < deadline:
                time.sleep(0.2)
            held = held_now(server.url)
            setup_seconds = time.monotonic() - started
            cpu_before, idle_from = server.cpu(), time.monotonic()
            time.sleep(args.idle_seconds)
            idle_cpu = (server.cpu() - cpu_before) / (time.monotonic() - idle_from) * 100
            rss_held = sum(server.rss())
            cpu_before_write = user_and_system_seconds(server.process.pid)
            new_host = {"ip_address": "10.9.9.9", "port": 9}
            answer = requests.post(f"{server.url}/edsservice/{SERVICE}/hosts", json=new_host)
            acknowledged = time.monotonic()
            new_version = answer.json()["version"]
            report = json.loads(client.stdout.readline() or "{}")
            cpu_after = user_and_system_seconds(server.process.pid)
        finally:
            client.kill()
            client.wait()
    finally:
        server.stop()
    if report.get("last_answer_at") is None:
        raise RuntimeError(f"no held poll was answered after the write: {report}")
    window = max(1e-9, report["last_answer_at"] - report["first_answer_at"])
    return HeldPolls(
        clients=args.held_clients,
        held=int(held),
        setup_seconds=setup_seconds,
        rss_mb_before=rss_before,
        rss_mb_held=rss_held,
        idle_seconds=args.idle_seconds,
        idle_cpu_percent=idle_cpu,
        idle_repolls=sum(1 for at in report["repolled_at"] if idle_from <= at < acknowledged),
        first_answer_ms=(report["first_answer_at"] - acknowledged) * 1000,
        release_ms=(report["last_answer_at"] - acknowledged) * 1000,
        released_ok=report["versions"].get(new_version, 0),
        release_cpu_us=tuple(
            (after - before) / args.held_clients * 1e6
            for before, after in zip(cpu_before_write, cpu_after, strict=True)
        ),
        client_cpu_percent=report["cpu_while_answered"] / window * 100,
        load_average=(load_before, load_average()),
    )


def headlines(held: HeldPolls) -> dict[str, float]:
    """This run's figures for the history (the first two columns kept their names from 2,000 polls)."""
    return {
        "polls held": held.held,
        "all released by one write, ms": round(held.release_ms),
        "KB per held poll": round(held.kb_per_held_poll, 1),
        "idle CPU %": round(held.idle_cpu_percent, 1),
    }


def render(args, held: HeldPolls) -> str:
    user, system = held.release_cpu_us
    return "\n".join(
        [
            "## Thousands of held polls",
            "",
            f"{held.clients:,} simulated Envoys, each holding an Envoy-shaped poll (the captured 77 KB body, its",
            "own node id, `x-envoy-expected-rq-timeout-ms: 30000`) on its own loopback connection to one server",
            f"with the default settings ({args.workers} workers, sqlite); a separate client process drives them",
            "on raw sockets (`bench/held_polls.py`), and polls again whenever a hold runs out, as Envoy does.",
            f"Load average {held.load_average[0]} before, {held.load_average[1]} after.",
            "",
            f"- polls held at once: {held.held:,} ({held.setup_seconds:.0f} s to open and send them all)",
            f"- worker memory (resident, all workers): {held.rss_mb_before:.0f} MB before, {held.rss_mb_held:.0f} MB "
            f"while holding them: **{held.kb_per_held_poll:.1f} KB per held poll**",
            f"- worker CPU while holding them for {held.idle_seconds:g} s, nothing changing: "
            f"**{held.idle_cpu_percent:.1f}% of one core** ({held.idle_repolls} holds ran out and were polled again)",
            f"- one write released them all in **{held.release_ms:.0f} ms** (write acknowledged to the last answer "
            f"read; the first {held.first_answer_ms:.0f} ms); {held.released_ok:,} of {held.clients:,} answered 200 "
            "with the new version",
            f"- worker CPU per released poll: {user + system:.0f} us ({user:.0f} user, {system:.0f} system); the "
            f"client was busy {held.client_cpu_percent:.0f}% of the time the answers took to arrive",
            "",
            "The same measurement back to back on 2026-12-01 (load average 3.5-4), the code before and after",
            "one TCP segment per answer, no gevent spawn-tree records, the modules and the app frozen out of",
            "the garbage collector's way, the clients view's rows written a batch per statement and the",
            "held-polls gauge written once a second: one write released the 10,000 in 2,563 and 2,763 ms",
            "before (274 and 285 us of worker CPU per released poll), 1,100 and 1,517 ms after (111 and",
            "131 us). Memory per held poll stayed at 18-19 KB; idle CPU went from 2.0-4.5% to 1.5-1.8% of a",
            "core. What is left of a release is mostly gunicorn's: writing the answer and reading the",
            "connection's next request cost about three quarters of it, eds-server's own steps the rest.",
            "The release is bound by the CPU the workers get: ten thousand answers are ~1.1 s of worker",
            "CPU, on two cores that the client and whatever else runs on the machine share.",
            "",
        ]
    )


# -- the simulated Envoys, in a process of their own ----------------------------------------------


class _Envoy:
    __slots__ = ("index", "sock", "request", "sent", "polls", "received")

    def __init__(self, index: int, request: bytes):
        self.index = index
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = request
        self.sent = 0  # bytes of `request` sent
        self.polls = 0  # sent in full
        self.received = b""


def _answer(received: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(status, body, the bytes after it) once a whole answer arrived, else None."""
    end = received.find(b"\r\n\r\n")
    if end < 0:
        return None
    length = CONTENT_LENGTH.search(received, 0, end)
    body_end = end + 4 + (int(length.group(1)) if length else 0)
    if len(received) < body_end:
        return None
    return received[9:12], received[end + 4 : body_end], received[body_end:]


def run_envoys(port: int, count: int, version: str) -> tuple[dict, list]:
    """Hold `count` polls on 127.0.0.1:`port` until each has been answered 200 (or CLIENT_PATIENCE passes).

    Returns the report and the connections, open: closing them is no part of the measurement.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < count + 64:
        raise SystemExit(f"the open-file limit is {hard}: raise it (ulimit -Hn) to hold {count} connections")
    body = json.loads(captured_body(version))
    body["node"]["id"] = NODE_PLACEHOLDER
    prefix, suffix = json.dumps(body, separators=(",", ":")).encode().split(NODE_PLACEHOLDER.encode())

    def request(index: int) -> bytes:
        payload = b"".join((prefix, f"held-envoy-{index}".encode(), suffix))
        head = (
            f"POST {POLL} HTTP/1.1\r\nHost: eds_cluster\r\nContent-Type: application/json\r\n"
            f"x-envoy-expected-rq-timeout-ms: 30000\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        return head.encode() + payload

    # epoll itself rather than `selectors`: ten thousand answers arrive at once, and the client's
    # every microsecond per answer is taken from the two cores the server answers them with.
    epoll = select.epoll()
    envoys: dict[int, _Envoy] = {}  # by descriptor; every connection stays open until the process exits
    waiting = list(range(count - 1, -1, -1))  # popped from the end: opened in order
    opening = 0
    all_sent = False
    versions: dict[str, int] = {}
    repolled_at: list[float] = []
    first_answer_at = last_answer_at = None
    cpu_at_first_answer = 0.0
    answered = 0
    deadline = time.monotonic() + CLIENT_PATIENCE

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    while answered < count and time.monotonic() < deadline:
        while waiting and opening < OPENING_AT_ONCE:
            envoy = _Envoy(waiting.pop(), b"")
            envoy.request = request(envoy.index)
            envoys[envoy.sock.fileno()] = envoy
            envoy.sock.connect_ex(("127.0.0.1", port))
            epoll.register(envoy.sock.fileno(), select.EPOLLOUT)
            opening += 1
        if not waiting and opening == 0 and not all_sent:
            all_sent = True
            print(json.dumps({"sent": count}), flush=True)
        for fd, events in epoll.poll(0.5):
            envoy = envoys[fd]
            try:
                if events & select.EPOLLOUT:
                    envoy.sent += envoy.sock.send(memoryview(envoy.request)[envoy.sent :])
                    if envoy.sent == len(envoy.request):
                        opening -= envoy.polls == 0
                        envoy.polls += 1
                        envoy.request = b""  # made again for the next poll: 77 KB each
                        epoll.modify(fd, select.EPOLLIN)
                    continue
                data = envoy.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as error:
                data, outcome = b"", type(error).__name__
            else:
                outcome = "closed by the server"
            if data:
                envoy.received += data
                answer = _answer(envoy.received)
                if answer is None:
                    continue
                status, payload, envoy.received = answer
                if status == b"304":  # the hold ran out: poll again, as Envoy does
                    repolled_at.append(time.monotonic())
                    envoy.request, envoy.sent = request(envoy.index), 0
                    epoll.modify(fd, select.EPOLLOUT)
                    continue
                got = VERSION_INFO.search(payload) if status == b"200" else None
                outcome = got.group(1).decode() if got else status.decode()
            now = time.monotonic()
            if first_answer_at is None:
                first_answer_at, cpu_at_first_answer = now, cpu()
            last_answer_at = now
            versions[outcome] = versions.get(outcome, 0) + 1
            answered += 1
            opening -= envoy.polls == 0  # failed before its first poll was sent
            epoll.unregister(fd)  # answered: from here the connection stays idle
    report = {
        "answered": answered,
        "versions": versions,
        "repolled_at": repolled_at,
        "first_answer_at": first_answer_at,
        "last_answer_at": last_answer_at,
        "cpu_while_answered": cpu() - cpu_at_first_answer,
    }
    return report, list(envoys.values())


if __name__ == "__main__":
    port, count, version = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    report, connections = run_envoys(port, count, version)
    print(json.dumps(report), flush=True)
    sys.stdin.read()  # until the bench closes the pipe (or kills this process): the connections stay open
    os._exit(0)  # ten thousand sockets close with the process
