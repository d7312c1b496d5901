"""What the bounds of issue 17 cost, and what they hold back (`make bench`, section "Limits and bad input").

- In-process costs of the checks every request now passes: the access line's log filter,
  the body depth check (against a walk of the parsed body), a SQLite write's check of its file.
- A real server (2 workers, SQLite): what one 1 MB poll naming 64 services leaves in the store and
  in /clients, and after how long a body that never arrives is answered 408.
"""

from __future__ import annotations

import json
import logging
import socket
import statistics
import time
import timeit
from pathlib import Path

import requests

from eds_server.api.common import MAX_BODY_DEPTH, nests_deeper_than
from eds_server.serving.logs import ACCESS_FORMAT, SafeValues
from eds_server.store import open_store
from eds_server.xds import version_of
from scripts.processes import EdsServer

BODY_READ_TIMEOUT = 2.0


def _micros(call, number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def _depth(value) -> int:
    """The walk the bytes check stands in for: nesting of a parsed body, iteratively."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def in_process_costs(tmp: Path) -> dict[str, float]:
    """Microseconds (the depth checks: milliseconds) per call, best of five repeats."""
    atoms = {"h": "127.0.0.1", "r": "POST /v3/discovery:endpoints HTTP/1.1", "s": "200", "B": "271", "M": "1"}
    atoms["{eds.node}e"] = "envoy-node-123"
    safe = SafeValues()

    def record() -> logging.LogRecord:
        return logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, ACCESS_FORMAT, (atoms,), None)

    hosts = [
        {"ip_address": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", "port": 8000, "metadata": {"v": [1, 2]}}
        for i in range(10_000)
    ]
    body = json.dumps({"hosts": hosts}).encode()
    parsed = json.loads(body)
    store = open_store(f"sqlite:///{tmp}/hardening.db", version_of)
    try:
        return {
            "access line, formatted": _micros(lambda: record().getMessage(), 20_000),
            "access line, made safe": _micros(lambda: safe.filter(record()), 20_000),
            "body MB": len(body) / 1e6,
            "depth check ms": _micros(lambda: nests_deeper_than(body, MAX_BODY_DEPTH), 5) / 1000,
            "depth walk ms": _micros(lambda: _depth(parsed), 5) / 1000,
            "write check": _micros(store._writable_problem, 5_000),
        }
    finally:
        store.close()


def _stalled_body(server: EdsServer) -> float:
    """Seconds from sending a request whose body never comes to the server closing its connection."""
    head = b"PUT /edsservice/web HTTP/1.1\r\nHost: eds\r\nContent-Type: application/json\r\nContent-Length: 500\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=BODY_READ_TIMEOUT + 30) as sock:
        sock.sendall(head + b"\r\n{")
        started = time.monotonic()
        while sock.recv(65536):
            pass
        return time.monotonic() - started


def server_figures(tmp: Path) -> dict[str, float]:
    db = tmp / "hardening-server.db"
    env = {"EDS_BODY_READ_TIMEOUT": str(BODY_READ_TIMEOUT)}
    server = EdsServer(tmp=tmp, store=f"sqlite:///{db}", workers=2, env=env).start()
    try:
        names = [f"s{i:03d}-" + "n" * 123 for i in range(64)]
        empty = json.dumps({"node": {"id": "", "cluster": "c" * 5000}, "resource_names": names})
        node = {"id": "N" * (1024 * 1024 - len(empty)), "cluster": "c" * 5000}  # the whole of max_body_bytes
        body = json.dumps({"node": node, "resource_names": names})
        before = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
        requests.post(f"{server.url}/v3/discovery:endpoints", data=body, timeout=10).raise_for_status()
        time.sleep(3)  # every worker flushes its rows once a second
        clients = requests.get(f"{server.url}/clients", timeout=10)
        grown = sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) - before
        stalls = [_stalled_body(server) for _ in range(3)]
        return {
            "db grown": grown,
            "clients bytes": len(clients.content),
            "clients rows": len(clients.json()["clients"]),
            "stalled body closed after": statistics.median(stalls),
        }
    finally:
        server.stop()


def measure(tmp: Path) -> dict[str, float]:
    return {**in_process_costs(tmp), **server_figures(tmp)}


def render(figures: dict[str, float]) -> str:
    f = figures
    return "\n".join(
        [
            "## Limits and bad input: what the bounds cost (issue 17)",
            "",
            "In-process, best of five repeats (the machine shared with other work):",
            "",
            "| check | cost |",
            "|---|---|",
            f"| a poll's access line through the log filter (nothing to escape) | {f['access line, made safe']:.1f} us "
            f"(formatting it alone: {f['access line, formatted']:.1f} us) |",
            f"| the body depth check on a {f['body MB']:.1f} MB PUT of 10,000 hosts (bytes operations) | "
            f"{f['depth check ms']:.1f} ms (a walk of the parsed body in Python: {f['depth walk ms']:.1f} ms) |",
            f"| a SQLite write's check of its file (same file, writable, free space) | {f['write check']:.1f} us |",
            "",
            "A real server (2 workers, SQLite):",
            "",
            f"- one unauthenticated 1 MB poll naming 64 services grew the store by {f['db grown'] / 1024:,.0f} KB and "
            f"`/clients` to {f['clients bytes'] / 1024:,.0f} KB ({f['clients rows']:.0f} rows); before the bounds "
            "the issue measured 404 MB and 67 MB;",
            f"- a request whose body never arrives is answered 408 and closed after "
            f"{f['stalled body closed after']:.2f} s with `body_read_timeout` {BODY_READ_TIMEOUT:g} s (before: never).",
            "",
        ]
    )
