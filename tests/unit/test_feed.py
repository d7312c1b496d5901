"""The gRPC process's change feed: after a write, the watched services whose version moved, and only
those, whether it reads each watched name or, watching more than the registry could hold, every
stored version at once."""

import queue

import pytest

from eds_server.model import Service, parse_host
from eds_server.xds.feed import READ_ALL_ABOVE, ChangeFeed


def put(store, name: str, *ports: int) -> None:
    hosts = tuple(parse_host({"ip_address": "10.0.0.1", "port": port}) for port in ports)
    store.update(name, lambda current: Service(name, hosts))


@pytest.mark.parametrize("watched", [3, READ_ALL_ABOVE + 1])
def test_the_feed_names_the_watched_services_a_write_moved(store, watched):
    put(store, "leaving", 8001)
    put(store, "web", 8001)
    names = ["web", "leaving", *(f"nobody-registered-{i}" for i in range(watched - 2))]
    moved: queue.Queue[set[str]] = queue.Queue()
    feed = ChangeFeed(store, moved.put)
    feed.watch(names)
    feed.start()
    try:
        put(store, "unwatched", 8001)
        assert moved.get(timeout=10) == set(names)  # the first look: every name is new to the feed
        put(store, "unwatched", 8002)
        put(store, "web", 8002)
        assert moved.get(timeout=10) == {"web"}
        store.update("leaving", lambda current: None)
        assert moved.get(timeout=10) == {"leaving"}
        put(store, "nobody-registered-0", 8001)  # registered at last
        assert moved.get(timeout=10) == {"nobody-registered-0"}
    finally:
        feed.stop()
