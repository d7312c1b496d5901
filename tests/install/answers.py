"""What a freshly installed eds-server must answer, checked from outside: the README's first steps.

/healthz, the classic tutorial's first POST (its body taken from the tutorial, without the
`//` comments JSON does not allow), and the first poll a real Envoy 1.40 sent, whose answer
is read with Envoy's own protos and compared with the tutorial's host.
"""

from __future__ import annotations

import json
import re

import requests
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from ..helpers.captured import load_fixture, tutorial_text

TUTORIAL_POST = re.compile(r"curl -X POST [^\n]*? -d '(\{.*?\})' http://localhost:8080/edsservice/(\w+)", re.DOTALL)


def tutorial_post() -> tuple[str, bytes]:
    """The service name and body of the tutorial's first POST, its comments removed."""
    body, service = TUTORIAL_POST.search(tutorial_text()).groups()
    return service, re.sub(r"\s*//[^\n]*", "", body).encode()


def assert_serves_the_tutorial(url: str) -> None:
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200

    service, body = tutorial_post()
    created = requests.post(
        f"{url}/edsservice/{service}", data=body, headers={"Content-Type": "application/json"}, timeout=5
    )
    assert created.status_code == 201, created.text

    first_poll = load_fixture("envoy-1.40-eds-first-request.json")
    poll_body = {**first_poll["body"], "resource_names": [service]}
    answer = requests.post(
        f"{url}{first_poll['path']}",
        data=json.dumps(poll_body),
        headers={"Content-Type": first_poll["headers"]["content-type"]},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    response = json_format.Parse(answer.content, discovery_pb2.DiscoveryResponse())
    [resource] = response.resources
    assignment = endpoint_pb2.ClusterLoadAssignment()
    assert resource.Unpack(assignment), resource.type_url
    tutorial_host = {
        "endpoint": {"address": {"socket_address": {"address": "172.27.211.139", "port_value": 8001}}},
        "health_status": "HEALTHY",
        "load_balancing_weight": 50,
    }
    locality = {"locality": {"zone": "us-central1-a"}, "lb_endpoints": [tutorial_host]}
    expected = {"cluster_name": service, "endpoints": [locality]}
    assert assignment == json_format.ParseDict(expected, endpoint_pb2.ClusterLoadAssignment())
