"""Who may write and read (README.md#security): bearer tokens, a JSON content type for writes, and who a writer is."""

import logging
import os
import signal

import pytest
import requests
from openapi_spec_validator import validate

from eds_server import Settings, create_app
from eds_server.api.auth import bearer_token
from eds_server.settings import SettingsError, load_settings
from eds_server.store import open_store
from eds_server.xds import version_of
from scripts.processes import wait_until, worker_pids

WRITER, ROTATED, READER = "w-0123456789abcdef", "w-rotated-fedcba9876", "r-0123456789abcdef"
HOST = {"ip_address": "10.0.0.5", "port": 8001}
POLL = {
    "node": {"id": "n"},
    "resource_names": ["web"],
    "type_url": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def make_client(tmp_path):
    stores = []

    def make(**settings):
        store = open_store(f"sqlite:///{tmp_path}/registry-{len(stores)}.db", version_of)
        stores.append(store)
        return create_app(Settings(store="unused://", **settings), store=store).test_client()

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def guarded(make_client):
    """Writes need WRITER or ROTATED (two tokens: a rotation in progress); reads need READER or a write token."""
    client = make_client(api_tokens=[WRITER, ROTATED], read_tokens=[READER])
    assert client.put("/edsservice/web", json={"hosts": [HOST]}, headers=bearer(WRITER)).status_code == 201
    return client


WRITES = [
    ("post", "/edsservice/new", {"hosts": []}),
    ("put", "/edsservice/web", {"hosts": []}),
    ("delete", "/edsservice/web", None),
    ("post", "/edsservice/web/hosts", HOST),
    ("patch", "/edsservice/web/hosts/10.0.0.5:8001", {"priority": 1}),
    ("delete", "/edsservice/web/hosts/10.0.0.5:8001", None),
    # A route that does not exist is refused before it is looked up: no probing without a token.
    ("post", "/anything/else", {}),
]


@pytest.mark.parametrize("method, path, body", WRITES)
def test_a_write_without_a_token_is_401_with_a_challenge_and_changes_nothing(guarded, method, path, body):
    before = guarded.get("/edsservice", headers=bearer(READER)).get_json()
    response = getattr(guarded, method)(path, json=body)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in response.get_json()["message"]
    assert guarded.get("/edsservice", headers=bearer(READER)).get_json() == before


@pytest.mark.parametrize("method, path, body", WRITES)
@pytest.mark.parametrize(
    "header", ["Bearer wrong", f"Bearer {WRITER}x", f"Bearer {WRITER[:-1]}", f"Bearer {READER}", "wrong"]
)
def test_a_write_with_a_wrong_or_read_only_token_is_403(guarded, method, path, body, header):
    before = guarded.get("/edsservice", headers=bearer(READER)).get_json()
    response = getattr(guarded, method)(path, json=body, headers={"Authorization": header})
    assert response.status_code == 403
    assert "not accepted" in response.get_json()["message"]
    assert guarded.get("/edsservice", headers=bearer(READER)).get_json() == before


@pytest.mark.parametrize("token", [WRITER, ROTATED])
def test_every_configured_write_token_writes(guarded, token):
    response = guarded.post("/edsservice/web/hosts", json={"ip_address": "10.0.0.6", "port": 1}, headers=bearer(token))
    assert response.status_code == 201
    # A bare token, as pasted into Swagger's Authorize dialog without "Bearer ", works too.
    assert guarded.delete("/edsservice/web/hosts/10.0.0.6:1", headers={"Authorization": token}).status_code == 204


@pytest.mark.parametrize("path", ["/edsservice", "/edsservice/web", "/clients", "/clients/anything"])
def test_registry_reads_need_a_read_or_write_token_when_read_tokens_are_set(guarded, path):
    assert guarded.get(path).status_code == 401
    assert guarded.get(path, headers=bearer("nope")).status_code == 403
    assert guarded.get(path, headers=bearer(READER)).status_code not in (401, 403)
    assert guarded.get(path, headers=bearer(WRITER)).status_code not in (401, 403)


def test_discovery_health_and_the_console_stay_open(guarded):
    assert guarded.post("/v3/discovery:endpoints", json=POLL).status_code == 200
    v2 = {**POLL, "type_url": "type.googleapis.com/envoy.api.v2.ClusterLoadAssignment"}
    assert guarded.post("/v2/discovery:endpoints", json=v2).status_code == 200
    assert guarded.get("/v1/registration/web").status_code == 200
    for path in ("/healthz", "/readyz", "/swagger.json", "/"):
        assert guarded.get(path).status_code == 200, path


def test_without_read_tokens_reads_are_open(make_client):
    client = make_client(api_tokens=[WRITER])
    assert client.get("/edsservice").status_code == 200
    assert client.put("/edsservice/web", json={"hosts": []}).status_code == 401


def test_without_any_token_everything_is_open(make_client):
    client = make_client()
    assert client.put("/edsservice/web", json={"hosts": [HOST]}).status_code == 201
    assert client.get("/edsservice/web").status_code == 200


def test_a_token_file_with_comments_and_blank_lines(make_client, tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# rotated monthly\n\n  {ROTATED}  \n")
    client = make_client(api_tokens=[WRITER], api_token_file=str(path))
    for token in (WRITER, ROTATED):
        assert client.put("/edsservice/web", json={"hosts": []}, headers=bearer(token)).status_code in (200, 201)
    assert client.put("/edsservice/web", json={"hosts": []}, headers=bearer("# rotated monthly")).status_code == 403


def test_token_settings_from_environment_yaml_and_file(tmp_path):
    environ = {"EDS_API_TOKENS": f" {WRITER}, {ROTATED} ,", "EDS_READ_TOKENS": READER}
    settings = load_settings([], environ=environ)
    assert settings.api_tokens == [WRITER, ROTATED] and settings.read_tokens == [READER]
    assert WRITER not in repr(settings) and READER not in repr(settings)
    config = tmp_path / "eds.yaml"
    config.write_text(f"api_tokens: [{WRITER}, {ROTATED}]\n")
    assert load_settings(["--config", str(config)], environ={}).api_tokens == [WRITER, ROTATED]
    with pytest.raises(SettingsError, match="cannot be read"):
        load_settings([], environ={"EDS_API_TOKEN_FILE": str(tmp_path / "missing")})
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    with pytest.raises(SettingsError, match="holds no token"):
        load_settings([], environ={"EDS_API_TOKEN_FILE": str(empty)})


def test_refusals_are_logged_without_the_token(guarded, caplog):
    with caplog.at_level(logging.INFO, logger="eds_server"):
        guarded.put("/edsservice/web", json={"hosts": []}, headers=bearer("secret-guess-1"))
        guarded.put("/edsservice/web", json={"hosts": []}, headers=bearer(WRITER))
        guarded.put("/edsservice/web", json={"hosts": []})
    text = caplog.text
    assert "bearer token not accepted" in text and "no bearer token" in text
    for secret in ("secret-guess-1", WRITER, ROTATED, READER):
        assert secret not in text


@pytest.mark.parametrize(
    "header, token",
    [
        (None, None),
        ("", None),
        ("Bearer abc", "abc"),
        ("bearer   abc ", "abc"),
        ("abc", "abc"),
        ("Basic dXNlcjpwYXNz", None),
    ],
)
def test_bearer_token_parsing(header, token):
    assert bearer_token(header) == token


def test_swagger_authorize_button_and_secured_operations(guarded):
    spec = guarded.get("/swagger.json").get_json()
    validate(spec)
    # Swagger UI shows Authorize for this scheme and sends its value as the Authorization header.
    scheme = spec["securityDefinitions"]["bearer"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "Authorization"}
    operations = {
        (method.upper(), path): op
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if method != "parameters"
    }
    writes = {key: op for key, op in operations.items() if key[1].startswith("/edsservice") and key[0] != "GET"}
    assert len(writes) == 6
    for key, op in writes.items():
        assert op["security"] == [{"bearer": []}], key
        assert {"401", "403"} <= set(op["responses"]), key
    # Reads name the scheme as optional: needed only when read tokens are configured.
    for key in (("GET", "/edsservice"), ("GET", "/edsservice/{name}"), ("GET", "/clients")):
        assert operations[key]["security"] == [{"bearer": []}, {}]
    for key, op in operations.items():
        if not key[1].startswith(("/edsservice", "/clients")):
            assert "security" not in op, key


def test_a_real_server_warns_when_writes_are_open(eds_server):
    server = eds_server(workers=1)
    assert "NO API TOKEN IS CONFIGURED" in server.log_path.read_text()


def test_a_rotated_token_file_takes_effect_on_reload_and_no_token_is_logged(eds_server, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{WRITER}\n")
    server = eds_server(env={"EDS_API_TOKEN_FILE": str(token_file)})

    def put(token):
        url = f"{server.url}/edsservice/web"
        return requests.put(url, json={"hosts": []}, headers={**bearer(token), "Connection": "close"}, timeout=5)

    assert put(WRITER).status_code in (200, 201)
    assert put(ROTATED).status_code == 403
    token_file.write_text(f"# rotated\n{ROTATED}\n")
    # SIGHUP: gunicorn starts new workers, which read the file again; no restart, no dropped socket.
    # Until the old workers are gone they still take connections, with the old tokens.
    old_workers = set(worker_pids(server.process.pid))
    os.kill(server.process.pid, signal.SIGHUP)
    wait_until(
        lambda: (workers := set(worker_pids(server.process.pid))) and not workers & old_workers,
        timeout=20,
        what="the old workers replaced",
    )
    assert [put(ROTATED).status_code for _ in range(6)] == [200] * 6
    assert put(WRITER).status_code == 403
    log = server.log_path.read_text()
    assert "NO API TOKEN" not in log and "bearer token not accepted" in log
    for secret in (WRITER, ROTATED):
        assert secret not in log


@pytest.mark.parametrize(
    "trusted, peer, forwarded, logged",
    [
        ([], "127.0.0.1", "203.0.113.9", "127.0.0.1"),  # nobody is trusted by default
        (["10.0.0.0/8"], "127.0.0.1", "203.0.113.9", "127.0.0.1"),  # the peer is not a trusted proxy
        (["127.0.0.1"], "127.0.0.1", "203.0.113.9", "203.0.113.9"),
        # A client that prepends its own claim is named by what the trusted proxy saw: the rightmost untrusted.
        (["127.0.0.1", "10.0.0.0/8"], "127.0.0.1", "198.51.100.1, 203.0.113.9, 10.1.2.3", "203.0.113.9"),
        (["::1"], "::ffff:127.0.0.1", "203.0.113.9", "::ffff:127.0.0.1"),
        (["127.0.0.1"], "::ffff:127.0.0.1", "203.0.113.9", "203.0.113.9"),
        (["127.0.0.1"], "127.0.0.1", "", "127.0.0.1"),
    ],
)
def test_x_forwarded_for_names_the_writer_only_from_a_trusted_proxy(
    make_client, caplog, trusted, peer, forwarded, logged
):
    client = make_client(trusted_proxies=trusted)
    caplog.set_level(logging.INFO, "eds_server")
    client.put(
        "/edsservice/web",
        json={"hosts": [HOST]},
        headers={"X-Forwarded-For": forwarded},
        environ_overrides={"REMOTE_ADDR": peer},
    )
    [change] = [r.getMessage() for r in caplog.records if r.name == "eds_server.registry"]
    assert f" by={logged} " in change


def test_writes_with_a_body_must_be_json(make_client):
    """What a web page can make a browser send without a CORS preflight is refused (415), nothing changed."""
    client = make_client()
    body = '{"hosts": [{"ip_address": "10.0.0.5", "port": 8001}]}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = client.put("/edsservice/web", data=body, headers=headers)
        assert response.status_code == 415, content_type
        assert "Content-Type: application/json" in response.get_json()["message"]
    assert client.get("/edsservice").get_json() == []
    json_types = ("application/json", "application/json; charset=utf-8", "Application/JSON", "application/x+json")
    for content_type in json_types:
        response = client.put("/edsservice/web", data=body, headers={"Content-Type": content_type})
        assert response.status_code in (200, 201), content_type
    # Writes without a body need no content type; polls take any (they only read).
    assert client.delete("/edsservice/web/hosts/10.0.0.5:8001").status_code == 204
    assert client.post("/v3/discovery:endpoints", data='{"resource_names": ["web"]}').status_code == 200
