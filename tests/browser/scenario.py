"""Registry contents and Envoy-shaped polls against a real server, for the console's tests and screenshot.

Polls are the captured Envoy 1.40 request (tests/fixtures) with the node id,
service and version_info changed: what the server sees is what a real Envoy
sends. They carry no `x-envoy-expected-rq-timeout-ms`, so a server that holds
polls (long-poll) answers them at once.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

CAPTURED_POLL = json.loads((Path(__file__).parent.parent / "fixtures" / "envoy-1.40-eds-poll-request.json").read_text())


def put_service(url: str, name: str, hosts: list[dict], token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.put(f"{url}/edsservice/{name}", json={"hosts": hosts}, headers=headers, timeout=5)
    response.raise_for_status()
    return response.json()


def ask(url: str, name: str, node_id: str, version_info: str | None = None, cluster: str = "edge") -> requests.Response:
    """One Envoy poll for `name` as Envoy 1.40 sends it."""
    body = copy.deepcopy(CAPTURED_POLL["body"])
    body["node"]["id"], body["node"]["cluster"] = node_id, cluster
    body["resource_names"] = [name]
    if version_info is None:
        body.pop("version_info", None)
    else:
        body["version_info"] = version_info
    response = requests.post(
        f"{url}/v3/discovery:endpoints", data=json.dumps(body), headers={"content-type": "application/json"}, timeout=5
    )
    response.raise_for_status()
    return response


def poll(url: str, name: str, node_id: str, version_info: str | None = None, cluster: str = "edge") -> str | None:
    """The version a poll was sent, None for a 304."""
    response = ask(url, name, node_id, version_info, cluster)
    return None if response.status_code == 304 else response.json()["version_info"]


def follow(url: str, name: str, node_id: str, cluster: str = "edge") -> str:
    """An Envoy that accepts what it is sent: polls until it is told it holds the current version."""
    held = poll(url, name, node_id, cluster=cluster)
    while (sent := poll(url, name, node_id, held, cluster=cluster)) is not None:
        held = sent
    return held


def clients(url: str, name: str) -> list[dict]:
    response = requests.get(f"{url}/clients", params={"service": name}, timeout=5)
    response.raise_for_status()
    return response.json()["clients"]


def stick(url: str, name: str, node_id: str, old_version: str, cluster: str = "edge", within: float = 20) -> int:
    """An Envoy that rejects every update: sent the current version, it keeps asking with `old_version`.

    It polls as such an Envoy would (every 0.1 s) until the server's clients view calls it stuck,
    whichever worker answered which poll; bounded in time. Returns the number of polls it took.
    `old_version` must be a version of `name` from before its last change.
    """
    deadline = time.monotonic() + within
    polls = 0
    while time.monotonic() < deadline:
        sent = poll(url, name, node_id, old_version, cluster=cluster)
        polls += 1
        assert sent is not None and sent != old_version, "old_version must be older than the current version"
        if any(row["node_id"] == node_id and row["stuck"] for row in clients(url, name)):
            return polls
        time.sleep(0.1)
    raise AssertionError(f"{node_id} did not show as stuck on {name} after {polls} polls with {old_version}")


@contextmanager
def polling(url: str, name: str, node_id: str, rejecting: str | None = None, within: float = 60) -> Iterator[None]:
    """An Envoy polling `name` every 0.1 s in the background while inside (bounded by `within` seconds):
    it takes what it is sent or, given `rejecting` (a version it holds), keeps asking with that one."""
    done = threading.Event()

    def run() -> None:
        held, deadline = rejecting, time.monotonic() + within
        while not done.is_set() and time.monotonic() < deadline:
            sent = poll(url, name, node_id, held)
            if sent is not None and rejecting is None:
                held = sent
            done.wait(0.1)

    thread = threading.Thread(target=run, name=f"envoy {node_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def health_by_endpoint(answer: dict) -> dict[str, str]:
    """`ip:port` -> health_status of every endpoint in a DiscoveryResponse."""
    health = {}
    for resource in answer["resources"]:
        for locality in resource.get("endpoints", []):
            for lb_endpoint in locality.get("lb_endpoints", []):
                address = lb_endpoint["endpoint"]["address"]["socket_address"]
                health[f"{address['address']}:{address['port_value']}"] = lb_endpoint["health_status"]
    return health
