"""Each class of hostile input of issue 17, sent to a real `python -m eds_server` (gunicorn, 2 workers).

Every test checks the answer (status and message), that nothing was half-written
(the registry listed before and after), and that the server still serves: health,
readiness, a poll, the metrics.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from scripts.processes import REPO, EdsServer, wait_until
from tests.helpers.listing import registry_listing

FORGED = "[2026-01-01 00:00:00,000] [1] [INFO] eds_server.registry: delete service=payments by=admin"
WEB = {"hosts": [{"ip_address": "10.0.0.1", "port": 8001, "metadata": {"version": "v2"}}]}
JSON = {"Content-Type": "application/json"}
BODY_READ_TIMEOUT = 2
MAX_ROWS = 200


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    env = {
        "EDS_BODY_READ_TIMEOUT": str(BODY_READ_TIMEOUT),
        "EDS_LONG_POLL_MAX_HOLD": "4",
        "EDS_CLIENTS_MAX_ROWS": str(MAX_ROWS),
        "EDS_CLIENTS_MAX_ROWS_PER_NODE": "100",
        # Successful polls' access lines carry the node id a client chose: the log-injection tests read them.
        "EDS_ACCESS_LOG_POLLS": "true",
    }
    server = EdsServer(tmp=tmp, store=f"sqlite:///{tmp}/registry.db", workers=2, env=env).start()
    assert requests.put(f"{server.url}/edsservice/web", json=WEB, timeout=5).status_code == 201
    yield server
    server.stop()


def still_serving(server: EdsServer) -> None:
    """Health, readiness, a poll and the metrics answer as they should, on fresh connections."""
    fresh = {"Connection": "close"}
    assert requests.get(f"{server.url}/healthz", headers=fresh, timeout=5).status_code == 200
    assert requests.get(f"{server.url}/readyz", headers=fresh, timeout=5).status_code == 200
    poll = requests.post(f"{server.url}/v3/discovery:endpoints", json={"resource_names": ["web"]}, headers=fresh)
    assert poll.status_code == 200 and poll.json()["resources"][0]["cluster_name"] == "web"
    assert requests.get(f"{server.url}/metrics", headers=fresh, timeout=5).status_code == 200


def raw_exchange(server: EdsServer, request: bytes, timeout: float = 15) -> tuple[bytes, bool]:
    """Send bytes on a new connection; the answer, and whether the server closed the connection after it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except OSError:  # the server may refuse (and close) before everything is sent
            pass
        answer, closed = b"", False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            except TimeoutError:
                break
            if not data:
                closed = True
                break
            answer += data
        return answer, closed


def status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return status, json.loads(body)


def chunked(method: str, path: str, body: bytes, chunk: int = 64 * 1024) -> bytes:
    """A JSON request with Transfer-Encoding: chunked, as bytes on the wire."""
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    head = f"{method} {path} HTTP/1.1\r\nHost: eds\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    return head.encode() + b"\r\n" + chunks + b"0\r\n\r\n"


def db_bytes(server: EdsServer) -> int:
    path = Path(server.store.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def log_of(server: EdsServer) -> str:
    return server.log_path.read_text(errors="backslashreplace")


# -- 1. what one unauthenticated poll may put in the clients view -----------------------------------


def test_a_megabyte_poll_naming_64_services_and_a_flood_of_nodes_stay_within_the_bounds(server):
    names = [f"s{i:03d}-" + "n" * 123 for i in range(64)]
    body = json.dumps({"node": {"id": "", "cluster": "c" * 5000}, "resource_names": names})
    node_id = "N" * (1024 * 1024 - len(body))  # the whole of max_body_bytes
    body = json.dumps({"node": {"id": node_id, "cluster": "c" * 5000}, "resource_names": names})
    assert len(body) == 1024 * 1024
    before = db_bytes(server)
    answer = requests.post(f"{server.url}/v3/discovery:endpoints", data=body, timeout=10)
    assert answer.status_code == 200 and len(answer.json()["resources"]) == 64

    def rows():
        return requests.get(f"{server.url}/clients", timeout=10).json()["clients"]

    mine = wait_until(lambda: [r for r in rows() if r["node_id"].startswith("NNNN")], 10, what="the poll's rows")
    assert len(mine) == 64
    assert all(len(r["node_id"]) == 512 and len(r["cluster"]) == 256 for r in mine)
    assert "chars, xxh3 " in mine[0]["node_id"]
    # The measure: this one poll took the database from 24 KB to 404 MB and /clients to 67 MB.
    assert db_bytes(server) - before < 4 * 1024 * 1024
    assert len(requests.get(f"{server.url}/clients", timeout=10).content) < 2 * 1024 * 1024

    # A flood of made-up nodes fills the view to its bound and no further; it is said once per worker.
    with requests.Session() as session:
        for node in range(2 * MAX_ROWS):
            flood = {"node": {"id": f"made-up-{node}"}, "resource_names": ["web", "other"]}
            assert session.post(f"{server.url}/v3/discovery:endpoints", json=flood, timeout=5).status_code == 200
    wait_until(lambda: "clients view at its bound" in log_of(server), 10, what="the bound logged")
    time.sleep(2.5)  # two more flushes of each worker: said once, not once a flush
    assert 1 <= log_of(server).count("clients view at its bound") <= server.workers
    assert len(rows()) <= MAX_ROWS
    still_serving(server)


# -- 2. values the model accepts must be what the rest can carry ---------------------------------


REFUSED_WRITES = [
    ('{"hosts": [{"ip_address": "10.0.0.9", "port": 80, "metadata": {"n": 18446744073709551616}}]}', "2**53"),
    ('{"hosts": [{"ip_address": "10.0.0.9", "port": 80, "metadata": {"n": 1e400}}]}', "infinite"),
    ('{"hosts": [{"ip_address": "10.0.0.9", "port": 80, "tags": {"az": "\\ud800"}}]}', "body.hosts[0].tags.az"),
    ('{"hosts": [{"ip_address": "10.0.0.9", "port": 80, "metadata": {"d": ' + "[" * 247 + "]" * 247 + "}}]}", "deep"),
    ('{"hosts": [{"ip_address": "10.0.0.9", "port": 80, "ttl": 1' + "0" * 400 + "}]}", "hosts[0].ttl"),
]


@pytest.mark.parametrize("body, named", REFUSED_WRITES)
def test_values_nothing_after_the_model_could_carry_are_a_400_and_change_nothing(server, body, named):
    before = registry_listing(server.url)
    for path in ("/edsservice/web", "/edsservice/new-one"):
        answer = requests.put(f"{server.url}{path}", data=body, headers=JSON, timeout=5)
        assert answer.status_code == 400, answer.text
        assert named in answer.json()["message"]
    assert registry_listing(server.url) == before
    # The listing stays JSON any reader takes (no Infinity), the console's source included.
    json.loads(requests.get(f"{server.url}/edsservice", timeout=5).text, parse_constant=pytest.fail)
    still_serving(server)


def test_a_seed_holding_such_a_value_stops_the_start_with_exit_2_naming_it(tmp_path):
    seed = tmp_path / "seed.yaml"
    for value, named in (("18446744073709551616", "2**53"), (".inf", "finite"), ("2026-01-01", "not a date")):
        host = f"{{ip_address: 10.0.0.1, port: 80, metadata: {{v: {value}}}}}"
        seed.write_text(f"services:\n  web:\n    hosts:\n    - {host}\n")
        result = subprocess.run(
            [sys.executable, "-m", "eds_server", "--port", "1", "--store", f"sqlite:///{tmp_path}/r.db"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
            env={**os.environ, "EDS_SEED_FILE": str(seed)},
        )
        assert result.returncode == 2, result.stderr
        assert "services.web.hosts[0].metadata.v" in result.stderr and named in result.stderr
        assert "Traceback" not in result.stderr


# -- 3. headers and bodies of the poll path ------------------------------------------------------


def test_a_timeout_header_of_400_digits_is_ignored_and_the_poll_answered(server):
    answer = requests.post(
        f"{server.url}/v3/discovery:endpoints",
        json={"resource_names": ["web"]},
        headers={"x-envoy-expected-rq-timeout-ms": "9" * 400},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    still_serving(server)


@pytest.mark.parametrize("declared", [b"abc", b"-1", b"+26", b"26, 26", b"9" * 400])
def test_a_bogus_content_length_is_a_4xx_never_a_500(server, declared):
    body = b'{"resource_names": ["web"]}'
    request = b"POST /v3/discovery:endpoints HTTP/1.1\r\nHost: eds\r\nContent-Length: " + declared + b"\r\n\r\n" + body
    answer, _ = raw_exchange(server, request, timeout=5)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:300]
    still_serving(server)


@pytest.mark.parametrize(
    "body, named",
    [
        ({"resource_names": ["web"], "node": None}, "node: 'null' must be an object"),
        ({"resource_names": [None, 7]}, "resource_names[0]: 'null' must be"),
        ({"resource_names": "web"}, "resource_names: 'string' must be an array"),
    ],
)
def test_discovery_refusals_name_json_types(server, body, named):
    answer = requests.post(f"{server.url}/v3/discovery:endpoints", json=body, timeout=5)
    assert answer.status_code == 400 and named in answer.json()["message"]
    assert "NoneType" not in answer.text


def test_a_name_nested_past_every_recursion_limit_is_a_400(server):
    body = b'{"resource_names": [' + b"[" * 300 + b"]" * 300 + b"]}"
    answer = requests.post(f"{server.url}/v3/discovery:endpoints", data=body, timeout=5)
    assert answer.status_code == 400 and "'array' must be" in answer.json()["message"]
    still_serving(server)


# -- 4. log injection --------------------------------------------------------------------------


HOSTILE_NODES = ["edge-7\n" + FORGED, "esc\x1b[2J\x1b[31mred\x1b[0m \u202eevil", "x" * (1024 * 1024 - 200)]


def poll_as(server: EdsServer, node_id: str) -> None:
    body = {"node": {"id": node_id}, "resource_names": ["web"]}
    assert requests.post(f"{server.url}/v3/discovery:endpoints", json=body, timeout=10).status_code == 200


def test_node_ids_cannot_forge_log_lines_move_the_cursor_or_write_a_megabyte(server):
    for node_id in HOSTILE_NODES:
        poll_as(server, node_id)
    requests.put(f"{server.url}/edsservice/web", data='{"hosts": [{"ip_address": "a\\nb", "port": 1}]}', headers=JSON)
    wait_until(lambda: "node=xxxx" in log_of(server), 5, what="the access lines")
    raw = server.log_path.read_bytes()
    assert b"\x1b" not in raw and "\u202e".encode() not in raw
    lines = raw.decode().splitlines()
    assert not any(line.startswith(FORGED) for line in lines)
    [forging] = [line for line in lines if "node=edge-7" in line]
    assert forging.endswith("node=edge-7\\n" + FORGED)  # the whole attempt, on the access line, escaped
    assert max(len(line) for line in lines if "[INFO] Booting" not in line) < 4096
    still_serving(server)


def test_the_json_log_escapes_them_too(tmp_path, eds_server):
    server = eds_server(workers=1, extra_args=["--log-format", "json"], env={"EDS_ACCESS_LOG_POLLS": "true"})
    for node_id in HOSTILE_NODES:
        poll_as(server, node_id)

    def logged_nodes():
        records = [json.loads(line) for line in log_of(server).splitlines() if line.startswith("{")]
        return [r["node"] for r in records if r.get("node")]

    nodes = wait_until(lambda: len(logged_nodes()) == 3 and logged_nodes(), 5, what="the three access lines")
    assert nodes[0] == "edge-7\\n" + FORGED and nodes[1].startswith("esc\\x1b[2J") and "\\u202eevil" in nodes[1]
    assert len(nodes[2]) <= 1024 and all("\n" not in n and "\x1b" not in n for n in nodes)
    assert max(len(line) for line in log_of(server).splitlines() if line.startswith("{")) < 4096


# -- 6. cross-site writes to an open server ------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=zz", None],
)
def test_what_a_browser_sends_without_a_preflight_cannot_write(server, content_type):
    before = registry_listing(server.url)
    body = '{"hosts": [{"ip_address": "10.6.6.6", "port": 666}]}'
    headers = {"Content-Type": content_type} if content_type else {}
    for method, path in (("POST", "/edsservice/evil"), ("PUT", "/edsservice/web"), ("POST", "/edsservice/web/hosts")):
        data = body if method != "POST" or path.endswith("evil") else '{"ip_address": "10.6.6.6", "port": 666}'
        answer = requests.request(method, f"{server.url}{path}", data=data.encode(), headers=headers, timeout=5)
        assert answer.status_code == 415, (method, path, answer.text)
        assert "Content-Type: application/json" in answer.json()["message"]
    assert registry_listing(server.url) == before
    still_serving(server)


# -- 7. chunked bodies over max_body_bytes -------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("PUT", "/edsservice/web", b'{"hosts": []}' + b" " * (1024 * 1024)),  # the excess is whitespace
        ("PUT", "/edsservice/web", b'{"hosts": [' + b'{"ip_address": "10.0.0.2", "port": 80}, ' * 30_000 + b"]}"),
        ("POST", "/v3/discovery:endpoints", b'{"resource_names": ["web"]}' + b" " * (1024 * 1024)),
    ],
)
def test_a_chunked_body_over_the_limit_is_413_and_closes_the_connection(server, method, path, body):
    before = registry_listing(server.url)
    answer, closed = raw_exchange(server, chunked(method, path, body))
    status, error = status_and_json(answer)
    assert status == 413 and "larger than 1048576 bytes" in error["message"]
    assert closed
    assert registry_listing(server.url) == before
    still_serving(server)


def test_a_chunked_body_within_the_limit_is_read_whole(server):
    body = json.dumps(WEB).encode()
    answer, _ = raw_exchange(server, chunked("PUT", "/edsservice/web", body, chunk=7), timeout=3)
    assert status_and_json(answer)[0] == 200


# -- 8. who did it -------------------------------------------------------------------------------


def test_x_forwarded_for_names_the_writer_only_when_a_trusted_proxy_sent_it(server, eds_server):
    proxied = eds_server(workers=1, env={"EDS_TRUSTED_PROXIES": "127.0.0.1"})
    for target, named in ((server, "by=127.0.0.1 "), (proxied, "by=203.0.113.9 ")):
        answer = requests.post(
            f"{target.url}/edsservice/who/hosts",
            json={"ip_address": "10.0.0.3", "port": 80},
            headers={"X-Forwarded-For": "203.0.113.9"},
            timeout=5,
        )
        assert answer.status_code in (200, 201)
        wait_until(lambda t=target: "upsert-host service=who" in log_of(t), 5, what="the change line")
        [line] = [line for line in log_of(target).splitlines() if "upsert-host service=who" in line]
        assert named in line
    requests.delete(f"{server.url}/edsservice/who", timeout=5)


# -- 9. a body that never arrives; Swagger's headers ---------------------------------------------


def test_a_body_that_never_arrives_is_answered_408_and_its_connection_closed(server):
    head = b"PUT /edsservice/web HTTP/1.1\r\nHost: eds\r\nContent-Type: application/json\r\nContent-Length: 500\r\n"
    request = head + b"\r\n{"
    answer, closed = raw_exchange(server, request, timeout=BODY_READ_TIMEOUT + 15)
    status, error = status_and_json(answer)
    assert (status, closed) == (408, True), answer[:300]
    assert "body_read_timeout" in error["message"]
    still_serving(server)


def test_the_body_timeout_neither_cuts_a_held_poll_nor_an_idle_keep_alive_connection(server):
    version = requests.post(f"{server.url}/v3/discovery:endpoints", json={"resource_names": ["web"]}).json()
    poll = {"resource_names": ["web"], "version_info": version["version_info"]}
    with requests.Session() as session:
        started = time.monotonic()
        held = session.post(
            f"{server.url}/v3/discovery:endpoints",
            json=poll,
            headers={"x-envoy-expected-rq-timeout-ms": "60000"},
            timeout=30,
        )
        assert held.status_code == 304 and time.monotonic() - started > BODY_READ_TIMEOUT
        time.sleep(BODY_READ_TIMEOUT + 1)  # idle between two requests, as Envoy's connection is
        assert session.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_the_swagger_ui_is_sent_with_a_content_security_policy(server):
    page = requests.get(f"{server.url}/", timeout=5)
    assert "script-src 'self' 'sha256-" in page.headers["Content-Security-Policy"]
    assert (page.headers["X-Frame-Options"], page.headers["X-Content-Type-Options"]) == ("DENY", "nosniff")
