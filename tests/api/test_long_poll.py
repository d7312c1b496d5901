"""Held polls (long-poll): held while nothing changed, released by any change, never past the client's timeout."""

from eds_server.api.state import app_state
from scripts.processes import wait_until
from tests.helpers.held_polls import Background, held_now, poll, register


def test_a_poll_holding_the_current_version_waits_for_the_change(app):
    client, writer = app.test_client(), app.test_client()
    version = register(client, 8001)
    held = Background(lambda: poll(client, version))
    wait_until(lambda: held_now(writer) == 1, timeout=5, what="the poll held")
    new = register(writer, 8001, 8002)
    answer = held.result()
    assert answer.status_code == 200 and answer.get_json()["version_info"] == new
    assert held_now(writer) == 0


def test_a_write_between_the_version_read_and_the_hold_releases_the_poll_at_once(app, monkeypatch):
    # The lost wake-up: the poll read the version, then a write lands before its hold is registered
    # with the watcher (which starts only then and sees no change after it). The write is made
    # exactly there, every time, by the hold itself.
    client = app.test_client()
    state = app_state(app)
    version = register(client, 8001)
    register_the_hold = state.core.holds.wait
    written = []

    def write_first_then_hold(names, held_version, seconds):
        written.append(state.registry.replace("web", {"hosts": [{"ip_address": "10.0.0.1", "port": 8002}]}))
        return register_the_hold(names, held_version, seconds)

    monkeypatch.setattr(state.core.holds, "wait", write_first_then_hold)
    # Held up to 25 s (Envoy's 30 s minus the margin, capped); answered long before that, or not at all.
    answer = Background(lambda: poll(client, version)).result(within=10)
    assert answer.status_code == 200 and answer.get_json()["version_info"] == written[0].version_after


def test_without_the_envoy_timeout_header_a_poll_is_never_held(client):
    version = register(client, 8001)
    for headers in ({}, {"x-envoy-expected-rq-timeout-ms": "nonsense"}, {"x-envoy-expected-rq-timeout-ms": "900"}):
        # 900 ms minus the 1 s margin leaves nothing to hold for.
        assert Background(lambda h=headers: poll(client, version, headers=h)).result(within=5).status_code == 304


def test_a_hold_ends_with_304_before_the_clients_timeout(client):
    version = register(client, 8001)
    # Envoy waits 1.3 s; minus the 1 s margin the server holds 0.3 s at most.
    held = Background(lambda: poll(client, version, headers={"x-envoy-expected-rq-timeout-ms": "1300"}))
    assert held.result(within=5).status_code == 304
    assert 0.25 <= held.elapsed < 1.3


def test_a_first_poll_and_an_old_version_are_answered_at_once(client):
    register(client, 8001)
    assert Background(lambda: poll(client)).result(within=5).status_code == 200
    assert Background(lambda: poll(client, "older", node="other")).result(within=5).status_code == 200


def test_a_node_that_rejected_the_current_version_is_held_not_answered_in_a_loop(app):
    client, writer = app.test_client(), app.test_client()
    version = register(client, 8001)
    sent = poll(client, "older")  # the node is sent the current version ...
    assert sent.get_json()["version_info"] == version
    held = Background(lambda: poll(client, "older"))  # ... and comes back with its old one: it rejected it
    wait_until(lambda: held_now(writer) == 1, timeout=5, what="the rejecting node's poll held")
    new = register(writer, 8002)
    answer = held.result()
    assert answer.status_code == 200 and answer.get_json()["version_info"] == new


def test_a_rejecting_node_is_sent_the_current_version_again_when_the_hold_ends(client):
    version = register(client, 8001)
    poll(client, "older")
    headers = {"x-envoy-expected-rq-timeout-ms": "1300"}
    again = Background(lambda: poll(client, "older", headers=headers)).result(within=5)
    assert again.status_code == 200 and again.get_json()["version_info"] == version
