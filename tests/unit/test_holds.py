"""Held polls (xds/holds.py): a change releases the polls on its service, which count as releasing
until they are out of their wait (what the clients view's flush waits for)."""

from __future__ import annotations

import threading

from eds_server.registry import Registry
from eds_server.store import open_store
from eds_server.xds import DiscoveryCore, version_of
from eds_server.xds.holds import Holds
from scripts.processes import wait_until
from tests.helpers.discovery import put


def test_polls_released_by_a_change_are_releasing_until_they_leave_their_wait():
    store = open_store("memory://", version_of)
    registry = Registry(store)
    for name in ("web", "api"):
        put(registry, 8001, name=name)
    current_version = DiscoveryCore(store).current_version
    may_leave = threading.Event()  # a released poll leaves its wait only once the test says so

    def on_count(delta: int) -> None:
        if delta < 0:
            may_leave.wait(10)

    holds = Holds(store, current_version, on_count)

    def held(name: str) -> threading.Thread:
        thread = threading.Thread(target=holds.wait, args=((name,), current_version((name,)), 30), daemon=True)
        thread.start()
        return thread

    web, api = held("web"), held("api")
    wait_until(lambda: len(holds._waiting) == 2, 5, what="both polls held")
    assert not holds.releasing()
    put(registry, 8001, 8002)
    wait_until(holds.releasing, 10, what="the web poll released")
    may_leave.set()
    web.join(5)
    assert not holds.releasing()
    assert api.is_alive()  # its service did not change: still held
    holds.stop()
    api.join(5)
    assert not api.is_alive()
