"""The propagation rule and its waits (xds/propagation.py), on real polls noted by the discovery core."""

from __future__ import annotations

import threading

import pytest

from eds_server.store import open_store
from eds_server.xds import DiscoveryCore, version_of
from eds_server.xds.propagation import BEHIND, IN_SYNC, REJECTED, STOPPED_POLLING, TIMED_OUT
from tests.helpers.discovery import poll, put

WITHIN = 10.0


@pytest.fixture
def core(registry):
    return DiscoveryCore(registry.store, subscribed_within=WITHIN)


def states(result) -> dict[str, str]:
    return {envoy.status.row.node_id: envoy.state for envoy in result.envoys}


def test_in_sync_once_every_envoy_polls_with_the_version(registry, core):
    old = put(registry, 80)
    new = put(registry, 81)
    core.poll(poll("edge-1", new))
    core.poll(poll("edge-2", old))  # answered the new version, not back yet
    result = core.propagation.wait("web", new, 0)
    assert (result.outcome, states(result), result.have_it, result.subscribed) == (
        TIMED_OUT,
        {"edge-1": IN_SYNC, "edge-2": BEHIND},
        1,
        2,
    )
    assert result.named(BEHIND) == ["edge-2"]
    core.poll(poll("edge-2", new))
    assert core.propagation.wait("web", new, 0).outcome == IN_SYNC


def test_a_version_current_since_the_one_asked_counts_an_older_or_in_between_one_does_not(registry, core):
    v1 = put(registry, 81)
    v2 = put(registry, 82)
    v3 = put(registry, 83)
    core.poll(poll("holds-v1", v1))
    core.poll(poll("holds-current", v3))
    core.poll(poll("holds-in-between", v2))
    core.poll(poll("holds-older", "0123456789abcdef"))
    result = core.propagation.wait("web", v1, 0)
    assert states(result) == {
        "holds-v1": IN_SYNC,
        "holds-current": IN_SYNC,
        # Versions have no order of their own: v2 came after v1, but nothing here says so.
        "holds-in-between": BEHIND,
        "holds-older": BEHIND,
    }


def test_a_version_that_was_current_during_the_wait_counts_after_a_newer_write(registry, core, clock):
    v1 = put(registry, 81)
    core.poll(poll("edge-1", "0123456789abcdef"))  # sent v1
    waiting = []
    thread = threading.Thread(target=lambda: waiting.append(core.propagation.wait("web", v1, 10)))
    thread.start()
    put(registry, 82)  # the wait sees v2 current, then
    clock.advance(1)
    core.poll(poll("edge-1", v1))  # edge-1 reports v1, and is sent v2
    core.clients.flush()
    thread.join(10)
    assert waiting[0].outcome == IN_SYNC and waiting[0].waited < 10


def test_an_envoy_that_rejected_ends_the_wait_at_once(registry, core):
    old = put(registry, 80)
    current = put(registry, 81)
    core.poll(poll("edge-1", current))
    core.poll(poll("edge-2", old))
    core.poll(poll("edge-2", old))  # sent the current version, reports what it had: rejected
    core.poll(poll("edge-3", old))  # sent it, not back yet: behind
    result = core.propagation.wait("web", current, 30)
    assert result.outcome == REJECTED and result.waited < 30
    assert states(result) == {"edge-1": IN_SYNC, "edge-2": REJECTED, "edge-3": BEHIND}


def test_an_envoy_that_went_away_stops_counting_after_the_window(registry, core, clock):
    current = put(registry, 80)
    core.poll(poll("gone", "0123456789abcdef"))
    clock.advance(WITHIN - 1)
    core.poll(poll("edge-1", current))
    assert core.propagation.wait("web", current, 0).outcome == TIMED_OUT
    clock.advance(2)
    result = core.propagation.wait("web", current, 0)
    assert (result.outcome, states(result), result.subscribed) == (
        IN_SYNC,
        {"gone": STOPPED_POLLING, "edge-1": IN_SYNC},
        1,
    )


def test_an_envoy_polling_several_names_has_the_version_only_with_the_current_combination(registry, core):
    web = put(registry, 80)
    put(registry, 90, name="api")
    combined = core.poll(poll("both", None, ("web", "api"))).version
    core.poll(poll("both", combined, ("web", "api")))
    assert states(core.propagation.wait("web", web, 0)) == {"both": IN_SYNC}
    put(registry, 91, name="api")  # web's version stands; the node's combination is no longer current
    assert states(core.propagation.wait("web", web, 0)) == {"both": BEHIND}


def test_no_envoy_polling_is_in_sync_at_once(registry, core):
    result = core.propagation.wait("web", put(registry, 80), 30)
    assert (result.outcome, result.subscribed, result.waited < 30) == (IN_SYNC, 0, True)


def test_a_wait_is_woken_by_another_workers_rows_and_ends_in_sync(tmp_path, registry, core):
    """Two workers on one store: the poll lands on the other one, which flushes its rows."""
    other = DiscoveryCore(open_store(f"sqlite:///{tmp_path}/registry.db", version_of), subscribed_within=WITHIN)
    old = put(registry, 80)
    new = put(registry, 81)
    other.poll(poll("edge-1", old))
    other.clients.flush()
    waiting = []
    thread = threading.Thread(target=lambda: waiting.append(core.propagation.wait("web", new, 20)))
    thread.start()
    other.poll(poll("edge-1", new))
    other.clients.flush()
    thread.join(20)
    assert waiting[0].outcome == IN_SYNC and waiting[0].waited < 20
    other.store.close()


def test_a_wait_ends_with_what_it_knows_when_the_worker_stops(registry, core):
    put(registry, 80)
    core.poll(poll("edge-1", "0123456789abcdef"))
    waiting = []
    thread = threading.Thread(target=lambda: waiting.append(core.propagation.wait("web", put(registry, 81), 30)))
    thread.start()
    core.holds.stop()
    thread.join(30)
    assert waiting[0].outcome == TIMED_OUT and waiting[0].waited < 30


def test_an_envoy_whose_poll_is_held_counts_and_was_last_seen_now(registry, core, clock):
    current = put(registry, 80)
    core.clients.arrived(poll("edge-1", current), hold=25)  # held: no answer for up to 25 s
    clock.advance(WITHIN + 5)  # longer than the window, but the poll is still held
    result = core.propagation.wait("web", current, 0)
    assert states(result) == {"edge-1": IN_SYNC}
    assert result.last_seen(result.envoys[0]) == clock()
