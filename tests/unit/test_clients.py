"""The clients view's bookkeeping (xds/clients.py): rejections, signs of life, and news for the flusher."""

from __future__ import annotations

from eds_server.store import open_store
from eds_server.xds import DiscoveryCore, DiscoveryRequest, version_of
from tests.helpers.discovery import poll, put


def row_of(core: DiscoveryCore, node: str = "edge-1"):
    return next(s for s in core.clients.statuses("web") if s.row.node_id == node)


def test_a_node_that_keeps_reporting_what_it_had_when_sent_the_current_version_rejected_it(registry):
    core = DiscoveryCore(registry.store)
    old = put(registry, 80)
    current = put(registry, 81)
    assert core.poll(poll(version=old)).version == current
    assert not row_of(core).rejected  # sent the current version; what it does with it is not known yet
    core.poll(poll(version=old))
    status = row_of(core)
    assert (status.in_sync, status.stuck, status.rejected, status.rejection) == (False, True, True, None)
    core.poll(poll(version=current))
    assert (row_of(core).in_sync, row_of(core).rejected) == (True, False)


def test_a_node_reporting_a_version_another_worker_sent_it_rejected_nothing(tmp_path, registry):
    """A rollback: a worker that once sent the version that is current again is not rejected by a node
    that meanwhile took a newer one from another worker, and that node's poll is answered, not held."""
    workers = [
        DiscoveryCore(registry.store),
        DiscoveryCore(open_store(f"sqlite:///{tmp_path}/registry.db", version_of)),
    ]
    before = put(registry, 79)
    first = put(registry, 80)
    assert workers[0].poll(poll(version=before)).version == first
    workers[0].poll(poll(version=first))
    second = put(registry, 81)
    assert workers[1].poll(poll(version=first)).version == second
    assert put(registry, 80) == first  # rolled back: the first version is current again

    answer = workers[0].poll(poll(version=second), hold=5)
    assert (answer.status, answer.version, answer.held) == (200, first, 0.0)
    workers[0].clients.flush()
    assert not row_of(workers[1]).rejected
    workers[1].store.close()


def test_a_held_poll_is_a_sign_of_life_until_its_hold_ends_then_from_its_answer(registry, clock):
    core = DiscoveryCore(registry.store)
    put(registry, 80)
    arrived_at = clock()
    arrival = core.clients.arrived(poll(version="old"), hold=25)
    assert row_of(core).last_seen == arrived_at + 25
    clock.advance(3)
    core.clients.answered(arrival, None)
    assert (row_of(core).row.last_poll, row_of(core).last_seen) == (arrived_at, arrived_at + 3)


def test_a_poll_not_held_is_a_sign_of_life_when_it_arrives(registry, clock):
    core = DiscoveryCore(registry.store)
    put(registry, 80)
    arrival = core.clients.arrived(poll(), hold=0)
    clock.advance(1)
    core.clients.answered(arrival, "some-version")
    assert row_of(core).last_seen == arrival.at


def test_the_answer_of_a_poll_flushed_while_held_reaches_the_store_too(registry, clock):
    core = DiscoveryCore(registry.store)
    current = put(registry, 80)
    arrival = core.clients.arrived(poll(version="old"), hold=25)
    core.clients.flush()
    clock.advance(2)
    core.clients.answered(arrival, current)
    status = row_of(core)
    assert (status.row.polls, status.row.sent_version, status.last_seen) == (1, current, arrival.at + 2)


def test_news_for_the_flusher_is_a_node_reporting_another_version_or_rejecting(registry):
    core = DiscoveryCore(registry.store)
    news = core.clients.news
    old = put(registry, 80)
    current = put(registry, 81)

    def brings_news(request: DiscoveryRequest) -> bool:
        news.clear()
        core.poll(request)
        return news.is_set()

    assert brings_news(poll(version=old))  # a node this worker had not seen
    assert brings_news(poll(version=old))  # it rejected the current version
    assert not brings_news(poll(version=old))  # and rejects it still: told once, not at every poll
    assert brings_news(poll(version=current))  # it holds another version
    assert not brings_news(poll(version=current))  # the same again: nothing a wait waits for
    put(registry, 82)
    assert not brings_news(poll(version=current))  # sent the newer version: nothing it did yet
    assert brings_news(poll(version=current))  # it rejected that one: news again
    assert not brings_news(poll(version=current))
