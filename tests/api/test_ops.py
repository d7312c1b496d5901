"""What operators see: /metrics (adding up across real gunicorn workers), /clients, and the logs."""

import json
import re
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eds_server import Settings, create_app
from eds_server.api.state import app_state
from eds_server.store import StoreUnavailable
from eds_server.telemetry.metrics import HOLD_BUCKETS, POLL_BUCKETS, Metrics, outcome
from scripts.processes import wait_until
from tests.helpers.held_polls import ENVOY_TIMEOUT, Background, polls_held

V3_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def poll_body(node="envoy-1", names=("web",), version=None):
    body = {
        "node": {
            "id": node,
            "cluster": "edge",
            "user_agent_build_version": {"version": {"major_number": 1, "minor_number": 40, "patch": 2}},
        },
        "resource_names": list(names),
        "type_url": V3_TYPE,
    }
    if version is not None:
        body["version_info"] = version
    return body


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus text exposition, keyed by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_clients_view_shows_each_node_and_which_one_is_stuck(client):
    client.put("/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
    first = client.post("/v3/discovery:endpoints", json=poll_body("good")).get_json()["version_info"]
    client.post("/v3/discovery:endpoints", json=poll_body("good", version=first))
    # "bad" held an older version, was sent the current one and keeps reporting the older one: what a
    # rejection looks like in REST.
    for _ in range(3):
        client.post("/v3/discovery:endpoints", json=poll_body("bad", version="an-old-version"))

    rows = {row["node_id"]: row for row in client.get("/clients").get_json()["clients"]}
    assert rows["good"] == {
        "node_id": "good",
        "cluster": "edge",
        "envoy_version": "1.40.2",
        "resource_name": "web",
        "resource_names": ["web"],
        "api": "v3",
        "version_held": first,
        "current_version": first,
        "in_sync": True,
        "last_poll": rows["good"]["last_poll"],
        "polls": 2,
        "stuck": False,
        "subscribed": True,
        "transport": "rest",
        "mode": "poll",
        "sent_version": first,
        "rejected": False,
        "rejected_version": None,
        "error": None,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", rows["good"]["last_poll"])
    assert rows["bad"]["version_held"] == "an-old-version"
    assert (rows["bad"]["in_sync"], rows["bad"]["stuck"], rows["bad"]["polls"]) == (False, True, 3)

    # A new version is not yet sent to "bad": it is out of sync, but no longer stuck on the one it refused.
    client.post("/edsservice/web/hosts", json={"ip_address": "10.0.0.2", "port": 80})
    bad = client.get("/clients", query_string={"service": "web"}).get_json()["clients"][0]
    assert bad["node_id"] == "bad" and bad["current_version"] != first
    assert (bad["in_sync"], bad["stuck"]) == (False, False)
    assert client.get("/clients", query_string={"service": "other"}).get_json() == {"clients": []}
    refused = client.get("/clients", query_string={"service": "bad name"})
    assert refused.status_code == 400 and refused.get_json()["errors"][0]["field"] == "service"


def test_a_node_that_accepts_after_a_rejection_is_no_longer_stuck(client):
    client.put("/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
    current = client.post("/v3/discovery:endpoints", json=poll_body(version="old")).get_json()["version_info"]
    assert client.get("/clients").get_json()["clients"][0]["stuck"] is False  # sent it, no answer yet
    client.post("/v3/discovery:endpoints", json=poll_body(version="old"))
    assert client.get("/clients").get_json()["clients"][0]["stuck"] is True
    client.post("/v3/discovery:endpoints", json=poll_body(version=current))
    [row] = client.get("/clients").get_json()["clients"]
    assert (row["in_sync"], row["stuck"]) == (True, False)


def test_a_rejecting_node_is_stuck_whichever_worker_each_poll_reaches(tmp_path):
    """Two workers (two apps on one sqlite file) take the node's polls in turn, each flushing its rows."""
    workers = [create_app(Settings(store=f"sqlite:///{tmp_path}/registry.db")) for _ in range(2)]
    clients = [worker.test_client() for worker in workers]
    clients[0].put("/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
    stuck = []
    for index in range(8):
        clients[index % 2].post("/v3/discovery:endpoints", json=poll_body("bad", version="an-old-version"))
        app_state(workers[index % 2]).core.clients.flush()
        [row] = clients[(index + 1) % 2].get("/clients").get_json()["clients"]
        stuck.append(row["stuck"])
    # Each worker first sends the current version (no rejection yet); every later poll rejects it.
    assert stuck == [False] * 2 + [True] * 6
    assert row["polls"] == 8
    for worker in workers:
        app_state(worker).registry.store.close()


def test_a_flush_the_store_refuses_is_sent_whole_with_the_next(client, monkeypatch):
    state = app_state(client.application)
    client.put("/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
    for _ in range(2):
        client.post("/v3/discovery:endpoints", json=poll_body("bad", version="an-old-version"))
    store = state.registry.store
    record_clients = store.record_clients

    def unavailable(rows, retention):
        raise StoreUnavailable("the store is away")

    monkeypatch.setattr(store, "record_clients", unavailable)
    with pytest.raises(StoreUnavailable):
        state.core.clients.flush()
    monkeypatch.setattr(store, "record_clients", record_clients)
    for _ in range(2):
        client.post("/v3/discovery:endpoints", json=poll_body("bad", version="an-old-version"))
    [row] = client.get("/clients").get_json()["clients"]
    assert (row["polls"], row["stuck"]) == (4, True)


def test_metrics_count_polls_writes_and_registry_size(client):
    before = samples(client.get("/metrics").get_data(as_text=True))
    client.put("/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
    client.put("/edsservice/api", json={"hosts": [{"ip_address": "10.0.0.2", "port": 80}] * 1})
    client.post("/edsservice/web/hosts", json={"ip_address": "10.0.0.3", "port": 80})
    client.post("/edsservice/web", json={"hosts": []})  # 409
    version = client.post("/v3/discovery:endpoints", json=poll_body()).get_json()["version_info"]
    client.post("/v3/discovery:endpoints", json=poll_body(version=version))
    client.post("/v3/discovery:endpoints", data=b"{")
    response = client.get("/metrics")
    assert response.content_type.startswith("text/plain")
    after = samples(response.get_data(as_text=True))

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("eds_polls_total", api="v3", outcome="200") == 1
    assert grew("eds_polls_total", api="v3", outcome="304") == 1
    assert grew("eds_polls_total", api="v3", outcome="4xx") == 1
    assert grew("eds_poll_duration_seconds_count", api="v3") == 3
    assert grew("eds_writes_total", operation="replace", outcome="201") == 2
    assert grew("eds_writes_total", operation="upsert-host", outcome="201") == 1
    assert grew("eds_writes_total", operation="create", outcome="409") == 1
    assert grew("eds_write_duration_seconds_count", operation="replace") == 2
    assert after[("eds_registry_services", ())] == 2
    assert after[("eds_registry_hosts", ())] == 3
    assert (after[("eds_clients", ())], after[("eds_clients_in_sync", ())]) == (1, 1)
    assert after[("eds_clients_stuck", ())] == 0


def test_poll_figures_written_in_batches_read_as_if_observed_one_by_one():
    """`Metrics` notes polls in memory and writes them when flushed (or scraped): the exposition must be
    what prometheus-client's own counter and histogram give when told of each poll as it happens."""
    metrics = Metrics()
    reference = CollectorRegistry()
    polls = Counter("eds_polls", "", ["api", "outcome"], registry=reference)
    seconds = Histogram("eds_poll_duration_seconds", "", ["api"], buckets=POLL_BUCKETS, registry=reference)
    held = Histogram("eds_poll_hold_seconds", "", ["api"], buckets=HOLD_BUCKETS, registry=reference)
    # (api, status, seconds answering, seconds held), each well inside its bucket.
    answered = [("v3", 304, 0.00005, 0.0), ("v3", 304, 0.0003, 0.0), ("v3", 200, 0.0003, 3.0)]
    answered += [("v3", 400, 0.002, 0.0), ("v2", 200, 0.7, 0.0), ("v3", 304, 3.0, 45.0), ("v3", 304, 0.004, 0.05)]
    for api, status, answering, holding in answered:
        metrics.poll_answered(api, status, perf_counter() - answering - holding, holding)
        polls.labels(api, outcome(status)).inc()
        seconds.labels(api).observe(answering)
        if holding:
            held.labels(api).observe(holding)

    def figures(text: str) -> dict:
        """The samples of the metrics above, sums rounded (each measured poll takes a little longer)."""
        found = samples(text).items()
        names = ("eds_polls_total", "eds_poll_duration_seconds_", "eds_poll_hold_seconds_")
        return {
            k: (round(v, 2) if k[0].endswith("_sum") else v)
            for k, v in found
            if k[0].startswith(names) and not k[0].endswith("_created")
        }

    expected = figures(generate_latest(reference).decode())
    assert figures(metrics.render(lambda: []).decode()) == expected
    assert expected[("eds_poll_duration_seconds_bucket", (("api", "v3"), ("le", "0.0005")))] == 3
    # Flushed once: a second scrape adds nothing.
    assert figures(metrics.render(lambda: []).decode()) == expected


def test_metrics_and_clients_add_up_across_real_workers(eds_server):
    server = eds_server(workers=3)
    fresh = {"Connection": "close"}  # a new connection each time, so the calls spread over the workers

    def write(port):
        requests.post(
            f"{server.url}/edsservice/web/hosts", json={"ip_address": "10.0.0.1", "port": port}, headers=fresh
        ).raise_for_status()

    def poll(_):
        requests.post(f"{server.url}/v3/discovery:endpoints", json=poll_body(), headers=fresh).raise_for_status()

    def writers():
        return set(re.findall(r"\[(\d+)\] \[INFO\] eds_server\.registry: upsert-host", server.log_path.read_text()))

    # Concurrent batches until at least two workers took writes (an idle worker may win every accept).
    writes = polls = 0
    with ThreadPoolExecutor(4) as pool:
        while len(writers()) < 2 and writes < 400:
            list(pool.map(write, range(8000 + writes, 8000 + writes + 8)))
            list(pool.map(poll, range(8)))
            writes, polls = writes + 8, polls + 8
    assert len(writers()) >= 2, "the writes all landed on one worker; the test proves nothing"

    def totals():
        found = samples(requests.get(f"{server.url}/metrics", headers=fresh).text)
        return (
            found.get(("eds_polls_total", (("api", "v3"), ("outcome", "200"))), 0),
            sum(v for (name, labels), v in found.items() if name == "eds_writes_total"),
            found.get(("eds_registry_hosts", ())),
        )

    # Every worker's /metrics tells the same totals, once each has written its polls (every second).
    wait_until(lambda: totals() == (polls, writes, writes), timeout=10, what="every worker's polls written")
    for _ in range(6):
        assert totals() == (polls, writes, writes)
    # Each worker flushes its clients rows about every second; the counts then add up.
    rows = wait_until(
        lambda: [r for r in requests.get(f"{server.url}/clients").json()["clients"] if r["polls"] == polls],
        timeout=10,
        what="the clients view counting every poll",
    )
    assert rows[0]["node_id"] == "envoy-1" and rows[0]["envoy_version"] == "1.40.2"


def test_json_logs_name_the_change_the_refusal_and_the_polling_node(eds_server):
    server = eds_server(workers=1, extra_args=["--log-format", "json"], env={"EDS_ACCESS_LOG_POLLS": "true"})
    requests.put(f"{server.url}/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
    requests.put(f"{server.url}/edsservice/web", json={"hosts": [{"ip_address": "localhost", "port": 80}]})
    requests.post(f"{server.url}/v3/discovery:endpoints", json=poll_body("edge-7"))

    def lines():
        return [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]

    wait_until(lambda: any(line.get("node") == "edge-7" for line in lines()), timeout=5, what="the poll's access line")
    records = lines()
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    [change] = [r for r in records if r["logger"] == "eds_server.registry"]
    assert "replace service=web" in change["message"] and "version=none->" in change["message"]
    [refusal] = [r for r in records if r["logger"] == "eds_server.refusals"]
    assert "ip_address" in refusal["message"]
    [access] = [r for r in records if r.get("node") == "edge-7"]
    assert (access["method"], access["path"], access["status"]) == ("POST", "/v3/discovery:endpoints", "200")


def test_the_clients_view_keeps_its_bounds_and_says_so_once(tmp_path, clock, caplog):
    """A flood of made-up nodes (polls need no credentials) fills the view to its bounds and no further;
    the Envoys that keep polling stay, and reaching the bound is logged once, not once a flush."""
    from eds_server.store import open_store
    from eds_server.xds import version_of

    store = open_store(f"sqlite:///{tmp_path}/registry.db", version_of, clock=clock)
    app = create_app(Settings(store="unused://", clients_max_rows=5, clients_max_rows_per_node=2), store=store)
    client, clients = app.test_client(), app_state(app).core.clients
    caplog.set_level("INFO", "eds_server.clients")
    client.post("/v3/discovery:endpoints", json=poll_body("edge-real", names=("a", "b", "c")))
    for flood in range(3):
        clock.advance(1)
        for node in range(20):
            client.post("/v3/discovery:endpoints", json=poll_body(f"made-up-{flood}-{node}", names=("x", "y")))
        clock.advance(1)
        client.post("/v3/discovery:endpoints", json=poll_body("edge-real", names=("a", "b", "c")))
        clients.flush()
    rows = client.get("/clients").get_json()["clients"]
    assert len(rows) == 5
    # Two rows per node: of one poll's names, the first ones.
    assert sorted(r["resource_name"] for r in rows if r["node_id"] == "edge-real") == ["a", "b"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "clients_max_rows=5" in warnings[0]
    clock.advance(25 * 3600)  # everyone stops polling: the rows are forgotten, the view within its bounds again
    client.post("/v3/discovery:endpoints", json=poll_body("edge-real"))
    clients.flush()
    assert [r["node_id"] for r in client.get("/clients").get_json()["clients"]] == ["edge-real"]
    assert caplog.records[-1].getMessage() == "clients view within its bounds again"
    store.close()


ACCESS_LINE = re.compile(r'"(\w+) (\S+) HTTP/1\.1" (\d{3}) .* node=(\S+)$', re.M)


def access_lines(server) -> list[tuple[str, str, str, str]]:
    """(method, path, status, node) of every access line in a text-format server log."""
    return ACCESS_LINE.findall(server.log_path.read_text())


def test_by_default_successful_polls_have_no_access_line_and_everything_else_has_one(eds_server):
    # One worker: each request's line is written before the next request is read.
    server = eds_server(workers=1)
    poll_url = f"{server.url}/v3/discovery:endpoints"
    version = requests.put(f"{server.url}/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
    version = version.json()["version"]
    assert requests.post(poll_url, json=poll_body("edge-1")).status_code == 200
    assert requests.post(poll_url, json=poll_body("edge-1", version=version)).status_code == 304
    assert requests.post(poll_url.replace("v3", "v2"), json=poll_body("edge-1") | {"type_url": ""}).status_code == 200
    assert requests.get(f"{server.url}/v1/registration/web").status_code == 200
    held = Background(
        lambda: requests.post(poll_url, json=poll_body("edge-2", version=version), headers=ENVOY_TIMEOUT, timeout=30)
    )
    wait_until(lambda: polls_held(requests.get(f"{server.url}/metrics").text) == 1, timeout=10, what="the poll held")
    requests.post(f"{server.url}/edsservice/web/hosts", json={"ip_address": "10.0.0.2", "port": 80}).raise_for_status()
    assert held.result().status_code == 200
    assert requests.post(poll_url, data=b"{not json").status_code == 400
    assert requests.post(poll_url, json=poll_body("edge-3", names=("no such name!",))).status_code == 400
    assert requests.get(f"{server.url}/edsservice/web").status_code == 200

    wait_until(lambda: access_lines(server)[-1][:2] == ("GET", "/edsservice/web"), timeout=5, what="the last line")
    # (The harness read /healthz and the test /metrics a varying number of times, waiting.)
    assert [line[:3] for line in access_lines(server) if line[1] not in ("/healthz", "/metrics")] == [
        ("PUT", "/edsservice/web", "201"),
        ("POST", "/edsservice/web/hosts", "201"),
        ("POST", "/v3/discovery:endpoints", "400"),
        ("POST", "/v3/discovery:endpoints", "400"),
        ("GET", "/edsservice/web", "200"),
    ]


def test_a_refused_poll_names_its_node_in_its_access_line_and_its_refusal(eds_server):
    server = eds_server(workers=1)
    body = poll_body("edge-7", names=("bad name",))
    assert requests.post(f"{server.url}/v3/discovery:endpoints", json=body).status_code == 400
    wait_until(lambda: access_lines(server), timeout=5, what="the access line")
    [(_, _, status, node)] = [line for line in access_lines(server) if line[1] == "/v3/discovery:endpoints"]
    assert (status, node) == ("400", "edge-7")
    [refusal] = [line for line in server.log_path.read_text().splitlines() if "refused POST" in line]
    assert "(node edge-7)" in refusal


def test_access_log_polls_gives_every_poll_its_line_with_the_node(eds_server):
    server = eds_server(workers=1, env={"EDS_ACCESS_LOG_POLLS": "true"})
    poll_url = f"{server.url}/v3/discovery:endpoints"
    version = requests.put(f"{server.url}/edsservice/web", json={"hosts": [{"ip_address": "10.0.0.1", "port": 80}]})
    assert requests.post(poll_url, json=poll_body("edge-1", version=version.json()["version"])).status_code == 304
    assert requests.post(poll_url, json=poll_body("edge-2")).status_code == 200
    wait_until(lambda: access_lines(server)[-1][3] == "edge-2", timeout=5, what="the last poll's line")
    assert access_lines(server)[-2:] == [
        ("POST", "/v3/discovery:endpoints", "304", "edge-1"),
        ("POST", "/v3/discovery:endpoints", "200", "edge-2"),
    ]


def test_subscription_series_are_bounded_and_a_scrape_leaves_out_those_at_zero(monkeypatch):
    from eds_server.telemetry import metrics as metrics_module

    monkeypatch.setattr(metrics_module, "MAX_SUBSCRIPTION_SERIES", 2)
    metrics = Metrics()
    metrics.grpc_subscribed("ads-delta", ["a", "b", "c", "d"], [])
    metrics.grpc_subscribed("ads-delta", [], ["a"])
    rows = [line.rpartition(" ") for line in metrics.render(lambda: []).decode().splitlines()]
    series = {labels: float(value) for labels, _, value in rows if labels.startswith("eds_grpc_subscriptions{")}
    assert series == {
        'eds_grpc_subscriptions{mode="ads-delta",service="b"}': 1.0,
        'eds_grpc_subscriptions{mode="ads-delta",service="(other services)"}': 2.0,
    }
