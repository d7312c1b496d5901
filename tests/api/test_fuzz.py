"""Fuzzing every operation of the served OpenAPI document with schemathesis (README.md#security).

Every generated request must get a documented status that is not 5xx (but the
502 and 504 that a write's ?wait answers when its change did not reach every
Envoy: the write was applied), with a body that matches the document, and a
refused request (4xx) must leave the registry exactly as it was. `make fuzz` runs many more cases (FUZZ_EXAMPLES).
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance, response_schema_conformance

from eds_server import Settings, create_app
from eds_server.store import open_store
from eds_server.xds import version_of

TOKEN = "fuzz-token-0123456789"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


# Built at import: schemathesis turns the document into one test per operation at collection.
# (Its lazy fixture loader does not run on pytest 9.)
_DATA = tempfile.TemporaryDirectory(prefix="eds-fuzz-")
STORE = open_store(f"sqlite:///{_DATA.name}/registry.db", version_of)
# Waits (?wait=SECONDS) of a second at most: the fuzzer's own polls make Envoys that never follow.
SETTINGS = Settings(store="unused://", api_tokens=[TOKEN], max_services=50, propagation_max_wait=1)
APP = create_app(SETTINGS, store=STORE)
# A node that holds nothing yet: /clients lists it with version_held null, which its schema must allow.
APP.test_client().post("/v3/discovery:endpoints", json={"node": {"id": "new-envoy"}, "resource_names": ["web"]})
schema = schemathesis.openapi.from_wsgi("/swagger.json", APP)
# Requests the document allows and requests it forbids; the token is sent by the test
# (refusals for a missing or wrong token are tested in test_auth.py).
schema.config.generation.update(modes=["positive", "negative"], with_security_parameters=False)


@pytest.fixture(scope="module", autouse=True)
def _close_store():
    yield
    STORE.close()
    _DATA.cleanup()


def registry_state() -> list:
    return [(s.to_record(), STORE.version(s.name)) for s in STORE.services()]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation(case):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    before = registry_state()
    response = case.call(headers=headers)
    # Not checked: that every request the document allows is accepted. OpenAPI 2.0 cannot say
    # "an IP literal", "ip:port unique across hosts" or "weights summed per locality", so some
    # documented-valid bodies are rightly refused with 400. Every other check runs, including
    # that what the document forbids is refused.
    excluded = [positive_data_acceptance]
    if any(value.startswith("application/yaml") for value in response.headers.get("content-type", [])):
        # Swagger 2.0 gives a response one schema for every media type: the JSON one. The
        # YAML export is the seed file format, which tests/unit/test_seed.py reads back.
        excluded.append(response_schema_conformance)
    case.validate_response(response, headers=headers, excluded_checks=excluded)
    waited = response.status_code in (502, 504) and "propagation" in response.text
    assert response.status_code < 500 or waited, response.text
    if response.status_code >= 400:
        assert registry_state() == before, f"{response.status_code} {response.text}"


# -- JSON and headers the schema cannot describe -------------------------------------------------
# schemathesis generates what JSON Schema describes, serialised by Python's json: never a number
# past a double, an integer past 64 bits in a free-form field, a lone surrogate or deep nesting.
# These write such JSON text by hand into every place a body may hold it.

HOSTILE_SCALARS = [
    "1e400", "-1e400", "1E309", "4e-400", "-0.0", "NaN", "Infinity",
    str(2**53 + 1), str(2**64), str(-(2**70)), "1" + "0" * 400,
    '"\\ud800"', '"a\\udfffb"', '"\\udc00\\ud800"', '"\\ud83d\\ude00"', '"\\u0000\\u202e\\u001b[31m"',
    '"' + "x" * 5000 + '"',
]  # fmt: skip


def nested(depth: int, leaf: str, kind: str) -> str:
    opening, closing = ("[", "]") if kind == "array" else ('{"k":', "}")
    return opening * depth + leaf + closing * depth


leaves = st.sampled_from([*HOSTILE_SCALARS, "1"])
hostile_fragments = st.one_of(
    st.sampled_from(HOSTILE_SCALARS),
    st.builds(nested, st.integers(1, 400), leaves, st.sampled_from(["array", "object"])),
)
HOST_TEMPLATES = [
    '{{"ip_address": "10.9.0.1", "port": {}}}',
    '{{"ip_address": {}, "port": 80}}',
    '{{"ip_address": "10.9.0.1", "port": 80, "tags": {{"az": {}}}}}',
    '{{"ip_address": "10.9.0.1", "port": 80, "tags": {{"load_balancing_weight": {}}}}}',
    '{{"ip_address": "10.9.0.1", "port": 80, "metadata": {{"k": {}}}}}',
    '{{"ip_address": "10.9.0.1", "port": 80, "metadata": {{"deep": {{"er": [1, {}]}}}}}}',
    '{{"ip_address": "10.9.0.1", "port": 80, "metadata": {}}}',
    '{{"ip_address": "10.9.0.1", "port": 80, "ttl": {}}}',
    '{{"ip_address": "10.9.0.1", "port": 80, "priority": {}, "hostname": "h"}}',
    '{{"ip_address": "10.9.0.1", "port": 80, {}: 1}}',
]
POLICY = '{{"hosts": [], "policy": {{"endpoint_stale_after": {}}}}}'
# (method, path, body from (a host holding the fragment, the fragment))
WRITES = [
    ("PUT", "/edsservice/fuzz-hostile", lambda host, _: f'{{"hosts": [{host}]}}'),
    ("PUT", "/edsservice/fuzz-hostile", lambda _, value: POLICY.format(value)),
    ("POST", "/edsservice/fuzz-hostile/hosts", lambda host, _: host),
    ("PATCH", "/edsservice/fuzz-seeded/hosts/10.9.0.1:80", lambda host, _: host),
]
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def strict_json(text: str):
    """JSON as every other reader takes it: no NaN or Infinity, no lone surrogate."""

    def refuse(constant):
        raise AssertionError(f"{constant} in an answer")

    data = json.loads(text, parse_constant=refuse)
    text.encode("utf-8")  # a lone surrogate would have been written as such only by a broken encoder
    return data


@pytest.fixture(scope="module")
def seeded():
    client = APP.test_client()
    body = {"hosts": [{"ip_address": "10.9.0.1", "port": 80}]}
    assert client.put("/edsservice/fuzz-seeded", json=body, headers=AUTH).status_code in (200, 201)
    return client


@settings(max_examples=EXAMPLES * 4, deadline=None, suppress_health_check=list(HealthCheck))
@given(fragment=hostile_fragments, template=st.sampled_from(HOST_TEMPLATES), write=st.sampled_from(WRITES))
def test_hostile_json_in_any_field_is_refused_or_stored_whole_never_a_500(seeded, fragment, template, write):
    method, path, body_of = write
    before = registry_state()
    response = seeded.open(path, method=method, data=body_of(template.format(fragment), fragment), headers=AUTH)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert registry_state() == before
        assert response.get_json()["message"]
    # Whatever was stored is listed, rendered for Envoy and scraped as before.
    strict_json(seeded.get("/edsservice", headers=AUTH).get_data(as_text=True))
    for name in ("fuzz-hostile", "fuzz-seeded"):
        poll = seeded.post("/v3/discovery:endpoints", json={"resource_names": [name]})
        assert poll.status_code == 200 and strict_json(poll.get_data(as_text=True))["resources"]
    assert seeded.get("/metrics").status_code == 200


POLL_TEMPLATES = [
    '{{"node": {{"id": {}}}, "resource_names": ["web"]}}',
    '{{"node": {{"cluster": {}}}, "resource_names": ["web"]}}',
    '{{"node": {{"user_agent_build_version": {{"version": {{"major_number": {}}}}}}}, "resource_names": ["web"]}}',
    '{{"resource_names": ["web"], "version_info": {}}}',
    '{{"resource_names": [{}]}}',
    '{{"resource_names": {}}}',
    '{{"resource_names": ["web"], "type_url": {}}}',
    '{{"resource_names": ["web"], "error_detail": {}}}',
    "{}",
]
header_values = st.one_of(
    # Digits of any length up to 500, evenly (a regex strategy rarely draws past a few dozen).
    st.integers(1, 500).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n)),
    st.sampled_from(["-1", "+5", "1e3", "0x10", "1_000", " 30000 ", "\u0663\u0660", "30000.5", ""]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40),
)


@settings(max_examples=EXAMPLES * 4, deadline=None, suppress_health_check=list(HealthCheck))
@given(fragment=hostile_fragments, template=st.sampled_from(POLL_TEMPLATES), timeout=header_values)
def test_hostile_polls_and_headers_get_an_answer_or_a_json_4xx_never_a_500(fragment, template, timeout):
    client = APP.test_client()
    body = template.format(fragment)
    response = client.post(
        "/v3/discovery:endpoints",
        data=body,
        headers={"x-envoy-expected-rq-timeout-ms": timeout, "Content-Type": "application/json"},
    )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        message = response.get_json()["message"]
        assert "NoneType" not in message and "dict" not in message and "<class" not in message, message
    else:
        strict_json(response.get_data(as_text=True))
    rows = strict_json(client.get("/clients", headers=AUTH).get_data(as_text=True))["clients"]
    assert all(len(row["node_id"]) <= 512 and len(row["version_held"] or "") <= 256 for row in rows)


@settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=list(HealthCheck))
@given(length=header_values)
def test_any_content_length_is_read_or_refused_never_a_500(length):
    """What a WSGI server may pass on as CONTENT_LENGTH (gunicorn refuses most of these itself)."""
    client = APP.test_client()
    body = b'{"resource_names": ["web"]}'
    environ = {"CONTENT_LENGTH": length}
    assert client.post("/v3/discovery:endpoints", data=body, environ_overrides=environ).status_code < 500
    write = client.put("/edsservice/fuzz-length", data=b'{"hosts": []}', headers=AUTH, environ_overrides=environ)
    assert write.status_code < 500, write.text
