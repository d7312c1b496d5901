"""Held polls: request bodies, polls held in the background, and the held-polls gauge."""

import json
import threading
import time

import requests

from scripts.processes import wait_until

V3_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ENVOY_TIMEOUT = {"x-envoy-expected-rq-timeout-ms": "30000"}  # what Envoy sends with request_timeout: 30s


def body(version=None, node="envoy-1", names=("web",)):
    data = {"node": {"id": node, "cluster": "edge"}, "resource_names": list(names), "type_url": V3_TYPE}
    if version is not None:
        data["version_info"] = version
    return data


class Background:
    """A poll running in a thread, so the test can act while it is held."""

    def __init__(self, send):
        self.response = None
        self.elapsed = None
        self._thread = threading.Thread(target=self._run, args=(send,), daemon=True)
        self._thread.start()

    def _run(self, send):
        started = time.monotonic()
        self.response = send()
        self.elapsed = time.monotonic() - started

    def result(self, within: float = 10):
        self._thread.join(within)
        assert not self._thread.is_alive(), f"the poll was not answered within {within}s"
        return self.response


def polls_held(metrics: str) -> float:
    """The eds_polls_held gauge of a /metrics text."""
    return next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("eds_polls_held "))


def held_now(client) -> float:
    return polls_held(client.get("/metrics").get_data(as_text=True))


def hold_polls(server, count: int) -> tuple[str, list[Background]]:
    """`count` polls from as many nodes, each holding the current version of `web`, held by the real server."""
    version = requests.put(
        f"{server.url}/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 8001}]}
    ).json()["version"]
    url = f"{server.url}/v3/discovery:endpoints"
    polls = [
        Background(lambda n=n: requests.post(url, json=body(version, node=f"n{n}"), headers=ENVOY_TIMEOUT, timeout=30))
        for n in range(count)
    ]
    wait_until(
        lambda: polls_held(requests.get(f"{server.url}/metrics").text) == count,
        timeout=10,
        what=f"{count} polls held",
    )
    return version, polls


def poll(client, version=None, headers=ENVOY_TIMEOUT, **fields):
    return client.post("/v3/discovery:endpoints", data=json.dumps(body(version, **fields)), headers=headers)


def register(client, *ports):
    response = client.put("/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": p} for p in ports]})
    return response.get_json()["version"]
