"""Discovery answers, parsed with Envoy's own protos and compared with hand-written expectations (docs/PROTOCOL.md)."""

import gc
import json
import weakref

import pytest
from envoy.api.v2 import discovery_pb2 as discovery_v2
from envoy.api.v2 import eds_pb2 as eds_v2  # noqa: F401  (registers the v2 ClusterLoadAssignment)
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from eds_server.api.state import app_state
from eds_server.model import InvalidInput
from eds_server.xds import request as discovery_request
from eds_server.xds.request import ParsedPerConnection

V3_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
V2_TYPE = "type.googleapis.com/envoy.api.v2.ClusterLoadAssignment"


def poll(client, names=("web",), version=None, api="v3", environ_overrides=None, **extra):
    body = {
        "node": {"id": "node-1", "cluster": "edge"},
        "resource_names": list(names),
        "type_url": V3_TYPE if api == "v3" else V2_TYPE,
        **extra,
    }
    if version is not None:
        body["version_info"] = version
    return client.post(
        f"/{api}/discovery:endpoints",
        data=json.dumps(body),
        content_type="application/json",
        environ_overrides=environ_overrides,
    )


def parse_v3(response):
    """The answer as Envoy reads it: a DiscoveryResponse whose Any resources unpack into assignments."""
    message = json_format.Parse(response.data, discovery_pb2.DiscoveryResponse())
    assignments = []
    for resource in message.resources:
        assignment = endpoint_pb2.ClusterLoadAssignment()
        assert resource.Unpack(assignment), resource.type_url
        assignments.append(assignment)
    return message, assignments


def expected(data):
    return json_format.ParseDict(data, endpoint_pb2.ClusterLoadAssignment())


def test_assignment_maps_tags_locality_weight_health_priority_and_canary(client):
    client.put(
        "/edsservice/web",
        json={
            "hosts": [
                {"ip_address": "10.0.0.2", "port": 8002, "priority": 1, "health_status": "DRAINING"},
                {
                    "ip_address": "10.0.0.1",
                    "port": 8001,
                    "hostname": "web-1",
                    "metadata": {"version": "v2"},
                    "tags": {
                        "region": "us-central1",
                        "az": "us-central1-a",
                        "sub_zone": "rack7",
                        "canary": True,
                        "load_balancing_weight": 50,
                    },
                },
                {
                    "ip_address": "[::1]",
                    "port": 8003,
                    "tags": {
                        "region": "us-central1",
                        "az": "us-central1-a",
                        "sub_zone": "rack7",
                        "load_balancing_weight": 3,
                    },
                },
            ],
            "policy": {"overprovisioning_factor": 200, "endpoint_stale_after": 1.5},
        },
    )
    response = poll(client)
    assert response.status_code == 200
    message, [assignment] = parse_v3(response)
    assert message.type_url == V3_TYPE
    assert message.version_info and message.nonce
    assert assignment == expected(
        {
            "cluster_name": "web",
            "endpoints": [
                {
                    "locality": {"region": "us-central1", "zone": "us-central1-a", "sub_zone": "rack7"},
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": "10.0.0.1", "port_value": 8001}},
                                "hostname": "web-1",
                            },
                            "health_status": "HEALTHY",
                            "load_balancing_weight": 50,
                            "metadata": {"filter_metadata": {"envoy.lb": {"canary": True, "version": "v2"}}},
                        },
                        {
                            "endpoint": {"address": {"socket_address": {"address": "::1", "port_value": 8003}}},
                            "health_status": "HEALTHY",
                            "load_balancing_weight": 3,
                        },
                    ],
                },
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {"address": {"socket_address": {"address": "10.0.0.2", "port_value": 8002}}},
                            "health_status": "DRAINING",
                            "load_balancing_weight": 1,
                        }
                    ],
                    "priority": 1,
                },
            ],
            "policy": {"overprovisioning_factor": 200, "endpoint_stale_after": "1.5s"},
        }
    )


@pytest.mark.parametrize("setup", ["never registered", "emptied", "deleted"])
def test_no_endpoints_is_one_empty_assignment_never_an_empty_list(client, setup):
    if setup != "never registered":
        client.put("/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
        if setup == "emptied":
            client.put("/edsservice/web", json={"hosts": []})
        else:
            client.delete("/edsservice/web")
    response = poll(client)
    assert response.status_code == 200
    _, assignments = parse_v3(response)
    assert assignments == [expected({"cluster_name": "web"})]


def test_one_assignment_per_requested_name(client):
    client.put("/edsservice/a", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
    _, assignments = parse_v3(poll(client, names=("a", "b")))
    assert [a.cluster_name for a in assignments] == ["a", "b"]
    assert [len(a.endpoints) for a in assignments] == [1, 0]


def test_304_only_when_the_request_holds_the_current_version(client):
    client.put("/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
    first = poll(client)
    version = first.get_json()["version_info"]
    held = poll(client, version=version)
    assert held.status_code == 304 and held.data == b""
    assert poll(client, version="something-older").status_code == 200
    assert poll(client).status_code == 200  # no version_info: never 304


def test_version_is_stable_and_changes_only_with_what_envoy_sees(client):
    hosts = [{"ip_address": "10.0.0.1", "port": 80}, {"ip_address": "10.0.0.2", "port": 80}]
    client.put("/edsservice/web", json={"hosts": hosts})
    version = poll(client).get_json()["version_info"]
    client.put("/edsservice/web", json={"hosts": list(reversed(hosts))})
    client.put("/edsservice/other", json={"hosts": hosts})
    client.post("/edsservice/web/hosts", json=hosts[0])
    assert poll(client, version=version).status_code == 304
    client.patch("/edsservice/web/hosts/10.0.0.1:80", json={"health_status": "DRAINING"})
    changed = poll(client, version=version)
    assert changed.status_code == 200 and changed.get_json()["version_info"] != version


def test_hosts_are_listed_ipv4_first_then_by_address_as_a_number_then_by_port(client):
    # The order is part of every version: the same hosts must render the same way in every release.
    given = ["2001:db8::10", "10.0.0.10", "::1", "10.0.0.9:81", "9.255.255.255", "2001:db8::9", "10.0.0.9:80"]
    hosts = []
    for spelled in given:
        address, _, port = spelled.rpartition(":") if "." in spelled and ":" in spelled else (spelled, "", "80")
        hosts.append({"ip_address": address, "port": int(port)})
    client.put("/edsservice/web", json={"hosts": hosts})
    _, [assignment] = parse_v3(poll(client))
    listed = [(lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value)
              for lb in assignment.endpoints[0].lb_endpoints]  # fmt: skip
    assert listed == [
        ("9.255.255.255", 80),
        ("10.0.0.9", 80),
        ("10.0.0.9", 81),
        ("10.0.0.10", 80),
        ("::1", 80),
        ("2001:db8::9", 80),
        ("2001:db8::10", 80),
    ]


def test_v2_answers_with_v2_type_urls(client):
    client.put(
        "/edsservice/web",
        json={"hosts": [{"ip_address": "10.0.0.1", "port": 80, "tags": {"az": "z", "load_balancing_weight": 2}}]},
    )
    response = poll(client, api="v2")
    assert response.status_code == 200
    message = json_format.Parse(response.data, discovery_v2.DiscoveryResponse())
    assert message.type_url == V2_TYPE
    assignment = eds_v2.ClusterLoadAssignment()
    assert message.resources[0].Unpack(assignment)
    assert assignment.cluster_name == "web"
    endpoint = assignment.endpoints[0]
    assert endpoint.locality.zone == "z"
    assert endpoint.lb_endpoints[0].load_balancing_weight.value == 2
    assert endpoint.lb_endpoints[0].endpoint.address.socket_address.address == "10.0.0.1"


def test_v3_and_v2_polls_for_the_same_version_each_get_their_own_type_urls(client):
    # One service, one version, two APIs: an answer kept for one API must never be handed to the other
    # (Envoy 1.40 rejects v2 @types, a legacy Envoy v3 ones).
    client.put("/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
    for api, type_url in (("v3", V3_TYPE), ("v2", V2_TYPE), ("v3", V3_TYPE)):
        answer = poll(client, api=api).get_json()
        assert answer["type_url"] == type_url, api
        assert [r["@type"] for r in answer["resources"]] == [type_url], api


def test_v1_registration(client):
    client.put(
        "/edsservice/web",
        json={
            "hosts": [
                {
                    "ip_address": "10.0.0.1",
                    "port": 8001,
                    "tags": {"az": "us-central1-a", "canary": False, "load_balancing_weight": 50},
                }
            ]
        },
    )
    assert client.get("/v1/registration/web").get_json() == {
        "hosts": [
            {
                "ip_address": "10.0.0.1",
                "port": 8001,
                "tags": {"az": "us-central1-a", "canary": False, "load_balancing_weight": 50},
            }
        ]
    }
    assert client.get("/v1/registration/none").get_json() == {"hosts": []}


@pytest.mark.parametrize(
    "body, field",
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (b'{"resource_names": "web"}', "resource_names"),
        (b'{"resource_names": []}', "resource_names"),
        (b'{"resource_names": ["bad name"]}', "resource_names[0]"),
        (
            b'{"resource_names": ["web"], "type_url": "type.googleapis.com/envoy.api.v2.ClusterLoadAssignment"}',
            "type_url",
        ),
        (b'{"resource_names": ["web"], "version_info": 3}', "version_info"),
        (b'{"resource_names": ["web"], "node": "me"}', "node"),
        (b'{"resource_names": ["web"], "bogus": 1}', "bogus"),
        (b'{"resource_names": ["web"], "node": {"id": 7}}', "node.id"),
        (b'{"resource_names": ["web"], "version_info": {"a": 1}}', "version_info"),
        # Hostile bodies: invalid UTF-8, nesting deeper than any DiscoveryRequest, two documents, nothing.
        (b'{"resource_names": ["\xff\xfe"]}', "body"),
        (b'{"resource_names": ["web"], "node": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001, "body"),
        (b'{"resource_names": ["web"]}{"resource_names": ["web"]}', "body"),
        (b"", "body"),
    ],
)
def test_malformed_requests_are_4xx_json(client, body, field):
    response = client.post("/v3/discovery:endpoints", data=body, content_type="application/json")
    assert response.status_code == 400
    assert field in {p["field"] for p in response.get_json()["errors"]}
    # The same, on a connection whose previous poll was a good one (ParsedPerConnection).
    connection = {"gunicorn.socket": Connection()}
    assert poll(client, environ_overrides=connection).status_code == 200
    response = client.post("/v3/discovery:endpoints", data=body, environ_overrides=connection)
    assert response.status_code == 400
    assert field in {p["field"] for p in response.get_json()["errors"]}


class Connection:
    """Stands for the client socket gunicorn puts in the WSGI environ."""


def test_a_body_re_sent_on_its_connection_is_not_parsed_again(monkeypatch, envoy_poll):
    parsed = []
    parse_request = discovery_request.parse_request
    monkeypatch.setattr(
        discovery_request, "parse_request", lambda api, body: parsed.append(body) or parse_request(api, body)
    )
    parser, first_connection, other_connection = ParsedPerConnection(), Connection(), Connection()
    body = json.dumps(envoy_poll["body"]).encode()

    first = parser.parse("v3", body, first_connection)
    assert first == parse_request("v3", body) and first.node_id == envoy_poll["body"]["node"]["id"]
    assert parser.parse("v3", body, first_connection) is first and len(parsed) == 1
    # Only a connection's own last body is trusted: not another connection's, not another API's.
    assert parser.parse("v3", body, other_connection) == first and len(parsed) == 2
    with pytest.raises(InvalidInput):  # the v2 endpoint refuses a v3 type_url
        parser.parse("v2", body, first_connection)
    # One byte changed is parsed in full: a body cut short is refused, another version is read.
    with pytest.raises(InvalidInput):
        parser.parse("v3", body[:-1], first_connection)
    newer = body.replace(envoy_poll["body"]["version_info"].encode(), b"a-newer-version")
    assert parser.parse("v3", newer, first_connection).version_info == "a-newer-version"
    assert parser.parse("v3", body, first_connection) == first and len(parsed) == 6
    assert parser.parse("v3", body, None) == first and len(parsed) == 7  # no connection: always parsed

    # What a connection's last poll parsed to goes with the connection.
    remembered = weakref.ref(parser.parse("v3", body, first_connection))
    del first, first_connection
    gc.collect()
    assert remembered() is None


def test_polls_are_read_per_connection_as_gunicorn_hands_them(client, monkeypatch, envoy_poll):
    """`PollRoutes` keys the memo on the socket gunicorn puts in the environ; without one, every poll is parsed."""
    parsed = []
    parse_request = discovery_request.parse_request
    monkeypatch.setattr(
        discovery_request, "parse_request", lambda api, body: parsed.append(body) or parse_request(api, body)
    )
    body = json.dumps(envoy_poll["body"])
    connection = {"gunicorn.socket": Connection()}
    statuses = [client.post("/v3/discovery:endpoints", data=body, environ_overrides=connection).status_code]
    statuses += [client.post("/v3/discovery:endpoints", data=body, environ_overrides=connection).status_code]
    assert statuses == [200, 200] and len(parsed) == 1
    assert client.post("/v3/discovery:endpoints", data=body).status_code == 200 and len(parsed) == 2


def test_a_poll_body_over_the_limit_is_413_json(client):
    limit = app_state(client.application).settings.max_body_bytes
    response = client.post(
        "/v3/discovery:endpoints", data=b'{"resource_names": ["web"], "node": {"id": "' + b"x" * limit + b'"}}'
    )
    assert response.status_code == 413
    assert "max_body_bytes" in response.get_json()["message"]


def test_captured_envoy_polls_replayed(client, envoy_first_poll, envoy_poll):
    """First poll 200; the same poll with the returned version 304; after a write 200 with a new version."""

    def replay(capture, version=None):
        body = dict(capture["body"])
        if version is None:
            body.pop("version_info", None)
        else:
            body["version_info"] = version
        headers = {k: v for k, v in capture["headers"].items() if k not in ("host", "content-length")}
        return client.open(capture["path"], method=capture["method"], data=json.dumps(body), headers=headers)

    client.put("/edsservice/myservice", json={"hosts": [{"ip_address": "127.0.0.1", "port": 8001}]})
    first = replay(envoy_first_poll)
    assert first.status_code == 200
    version = first.get_json()["version_info"]
    assert replay(envoy_poll, version).status_code == 304
    assert replay(envoy_poll, envoy_poll["body"]["version_info"]).status_code == 200
    client.post("/edsservice/myservice/hosts", json={"ip_address": "127.0.0.1", "port": 8002})
    after = replay(envoy_poll, version)
    assert after.status_code == 200
    _, [assignment] = parse_v3(after)
    assert after.get_json()["version_info"] != version
    assert len(assignment.endpoints[0].lb_endpoints) == 2


def test_the_swagger_documented_route_answers_through_the_same_code(app, envoy_poll):
    """Polls are taken in front of Flask; the flask-restx resource behind it gives the very same answers."""
    from werkzeug.test import Client

    client, flask_only = app.test_client(), Client(app.wsgi_app.app)
    client.put("/edsservice/myservice", json={"hosts": [{"ip_address": "127.0.0.1", "port": 8001}]})
    body = json.dumps({k: v for k, v in envoy_poll["body"].items() if k != "version_info"})
    fast = client.post("/v3/discovery:endpoints", data=body)
    documented = flask_only.post("/v3/discovery:endpoints", data=body)
    assert (documented.status_code, documented.data) == (fast.status_code, fast.data) == (200, fast.data)
    held = json.dumps({**envoy_poll["body"], "version_info": fast.get_json()["version_info"]})
    assert flask_only.post("/v3/discovery:endpoints", data=held).status_code == 304
    assert flask_only.post("/v3/discovery:endpoints", data=b"{").status_code == 400


@pytest.mark.parametrize(
    "body, field, named",
    [
        (b'{"resource_names": ["web"], "node": null}', "node", "'null' must be an object"),
        (b'{"resource_names": ["web"], "node": {"id": 7}}', "node.id", "'number' must be a string"),
        (b'{"resource_names": ["web"], "node": {"id": true}}', "node.id", "'boolean' must be a string"),
        (b'{"resource_names": ["web"], "node": []}', "node", "'array' must be an object"),
        (b'{"resource_names": {"a": 1}}', "resource_names", "'object' must be an array"),
        (b'{"resource_names": [null]}', "resource_names[0]", "'null' must be 1-128"),
        # A name nested past any renderer's recursion limit is named by its type, not echoed.
        (b'{"resource_names": [' + b"[" * 300 + b"]" * 300 + b"]}", "resource_names[0]", "'array' must be"),
        (b"7", "body", "'number' must be an object"),
    ],
)
def test_refusals_name_json_types_never_python_ones(client, body, field, named):
    response = client.post("/v3/discovery:endpoints", data=body)
    assert response.status_code == 400, response.data
    message = response.get_json()["message"]
    assert f"{field}: {named}" in message
    for python in ("NoneType", "dict", "list", "int", "bool", "str"):
        assert f"'{python}'" not in message


def test_a_poll_with_problems_at_the_top_and_in_its_node_has_all_of_them_named(client):
    response = client.post(
        "/v3/discovery:endpoints", data=b'{"node": {"id": 5}, "resource_names": "web", "version_info": [1]}'
    )
    assert response.status_code == 400
    assert [problem["field"] for problem in response.get_json()["errors"]] == [
        "resource_names", "version_info", "node.id",
    ]  # fmt: skip


def test_a_poll_states_at_most_ten_problems_and_quotes_nothing_long(client):
    unknown = {f"field-{i}-" + "x" * 1000: 1 for i in range(500)}
    response = client.post("/v3/discovery:endpoints", json={"resource_names": ["web"], **unknown})
    assert response.status_code == 400
    assert len(response.get_json()["errors"]) == 10 and len(response.data) < 10_000


def test_what_a_poll_says_of_its_node_is_kept_bounded(client):
    node = {"id": "n" * 100_000, "cluster": "c" * 100_000, "build_version": "b" * 100_000}
    poll(client, api="v2", node=node, version="v" * 100_000)
    [row] = client.get("/clients").get_json()["clients"]
    assert (len(row["node_id"]), len(row["cluster"]), len(row["envoy_version"]), len(row["version_held"])) == (
        512,
        256,
        256,
        256,
    )
    assert row["node_id"].startswith("n" * 400) and "100000 chars, xxh3 " in row["node_id"]
    # Two long ids that share their start stay two nodes.
    poll(client, api="v2", node={**node, "id": "n" * 99_999 + "m"})
    assert len({row["node_id"] for row in client.get("/clients").get_json()["clients"]}) == 2


@pytest.mark.parametrize(
    "announced", ["9" * 400, "-5", "+30000", "30000.0", "1e5", "\u0663\u0660\u0660\u0660\u0660", " 30000", "0x7530"]
)
def test_a_timeout_header_that_is_not_a_plain_number_is_ignored(app, client, announced):
    """x-envoy-expected-rq-timeout-ms is a hint: anything but a decimal number is not held, and not refused."""
    client.put("/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
    current = poll(client).get_json()["version_info"]
    assert app.wsgi_app.hold_for({"HTTP_X_ENVOY_EXPECTED_RQ_TIMEOUT_MS": announced}) == 0.0  # PollRoutes
    response = client.post(
        "/v3/discovery:endpoints",
        json={"node": {"id": "node-1"}, "resource_names": ["web"], "version_info": current},
        headers={"x-envoy-expected-rq-timeout-ms": announced},
    )
    assert response.status_code == 304


@pytest.mark.parametrize("declared", ["abc", "-1", "+27", " 27", "1_0", "\u0662\u0667", "9" * 400])
def test_a_content_length_that_is_not_digits_is_a_json_400_or_413(client, declared):
    body = b'{"resource_names": ["web"]}'
    response = client.post("/v3/discovery:endpoints", data=body, environ_overrides={"CONTENT_LENGTH": declared})
    assert response.status_code == (413 if declared.isdigit() and declared.isascii() else 400)
    assert "Content-Length" in response.get_json()["message"] or response.status_code == 413
