"""The contract every store backend keeps; the `store` fixture runs it against each of them."""

import threading
import time

import pytest

from eds_server.model import Expected, Host, LimitExceeded, NotFound, PreconditionFailed, Service, parse_host
from eds_server.registry import Limits, Registry
from eds_server.store import ClientRow, Retention, open_store
from eds_server.xds import version_of


def host(ip, port=80, **fields):
    return parse_host({"ip_address": ip, "port": port, **fields})


def put(store, name, *hosts):
    service = Service(name, tuple(h.stamped(store.clock()) for h in hosts))
    return store.update(name, lambda current: service)


def test_absent_service_reads_as_none(store):
    assert store.get("nothing") is None
    assert store.version("nothing") is None
    assert store.services() == []


def test_write_then_read_back(store):
    change = put(store, "svc", host("10.0.0.1"), host("::1", 8002))
    assert change.before is None and change.after is not None
    stored = store.get("svc")
    assert stored == change.after
    assert [h.endpoint for h in stored.hosts] == ["10.0.0.1:80", "[::1]:8002"]
    assert store.version("svc") == version_of("svc", stored) == change.version_after


def test_services_are_listed_by_name(store):
    for name in ("b", "a", "c"):
        put(store, name, host("10.0.0.1"))
    assert [s.name for s in store.services()] == ["a", "b", "c"]


def test_version_is_a_pure_function_of_what_envoy_gets(store):
    first = put(store, "svc", host("10.0.0.1"), host("10.0.0.2")).version_after
    same_hosts_other_order = put(store, "svc", host("10.0.0.2"), host("10.0.0.1")).version_after
    assert same_hosts_other_order == first
    put(store, "other", host("10.9.9.9"))
    assert store.version("svc") == first
    changed = put(store, "svc", host("10.0.0.1"), host("10.0.0.2", tags={"load_balancing_weight": 2})).version_after
    assert changed != first


def test_delete_removes_the_service(store):
    put(store, "svc", host("10.0.0.1"))
    change = store.update("svc", lambda current: None)
    assert change.after is None and change.visible
    assert store.get("svc") is None and store.version("svc") is None


def test_an_exception_in_the_mutation_writes_nothing(store):
    put(store, "svc", host("10.0.0.1"))
    before = store.version("svc")

    def fail(current):
        raise NotFound("nope")

    with pytest.raises(NotFound):
        store.update("svc", fail)
    assert store.version("svc") == before


def test_an_expected_state_is_checked_inside_the_atomic_step(store):
    put(store, "svc", host("10.0.0.1"))
    etag = store.get("svc").etag
    store.update("svc", lambda s: s.with_host(host("10.0.0.2"))[0], Expected(etags=frozenset({etag})))
    with pytest.raises(PreconditionFailed) as refused:
        store.update("svc", lambda s: s.with_host(host("10.0.0.3"))[0], Expected(etags=frozenset({etag})))
    assert refused.value.current_etag == store.get("svc").etag != etag
    assert len(store.get("svc").hosts) == 2
    with pytest.raises(PreconditionFailed):
        store.update("absent", lambda s: Service("absent"), Expected(exists=True))
    store.update("svc", lambda s: s, Expected(exists=True))


def test_expiry_removes_only_hosts_past_their_ttl(store, clock):
    put(store, "svc", host("10.0.0.1", ttl=5), host("10.0.0.2"))
    version = store.version("svc")
    clock.advance(4.9)
    assert store.expire() == []
    clock.advance(0.2)
    changes = store.expire()
    assert [c.name for c in changes] == ["svc"] and changes[0].visible
    assert [h.ip_address for h in store.get("svc").hosts] == ["10.0.0.2"]
    assert store.version("svc") != version
    assert store.expire() == []


def test_a_heartbeat_moves_the_deadline_and_keeps_the_version(store, clock):
    put(store, "svc", host("10.0.0.1", ttl=5))
    version = store.version("svc")
    clock.advance(4)
    refreshed = host("10.0.0.1", ttl=5).stamped(clock())
    store.update("svc", lambda s: s.with_host(refreshed)[0])
    assert store.version("svc") == version
    clock.advance(4)
    assert store.due_for_expiry(clock()) == []  # the deadline before the heartbeat passed; it no longer counts
    assert store.expire() == []
    clock.advance(2)
    assert len(store.expire()) == 1


def test_a_heartbeat_that_changes_nothing_envoy_sees_does_not_render_its_service_again(store, clock, monkeypatch):
    # Rendering is most of a write to a large service, and its hosts heartbeat every few seconds.
    put(store, "svc", host("10.0.0.1", ttl=5), host("10.0.0.2"))
    version = store.version("svc")
    rendered = []
    monkeypatch.setattr(store, "version_of", lambda name, service: rendered.append(name) or version_of(name, service))
    clock.advance(1)
    store.update("svc", lambda s: s.with_host(host("10.0.0.1", ttl=5).stamped(clock()))[0])
    assert (store.version("svc"), rendered) == (version, [])
    store.update("svc", lambda s: s.with_host(host("10.0.0.1", ttl=5, tags={"load_balancing_weight": 3}))[0])
    assert rendered == ["svc"] and store.version("svc") != version


def test_a_later_write_that_adds_a_ttl_host_or_shortens_a_deadline_is_expired_by_it(store, clock):
    # A backend that indexes each service's earliest deadline must move it with every write,
    # earlier as well as later, and set it on a service that had none.
    put(store, "gains-a-ttl-host", host("10.0.0.1"))
    put(store, "deadline-shortened", host("10.0.0.1", ttl=60))
    clock.advance(1)
    store.update("gains-a-ttl-host", lambda s: s.with_host(host("10.0.0.2", ttl=5).stamped(clock()))[0])
    store.update("deadline-shortened", lambda s: s.with_host(host("10.0.0.1", ttl=5).stamped(clock()))[0])
    clock.advance(5.1)
    assert sorted(c.name for c in store.expire()) == ["deadline-shortened", "gains-a-ttl-host"]
    assert [h.ip_address for h in store.get("gains-a-ttl-host").hosts] == ["10.0.0.1"]
    assert store.get("deadline-shortened").hosts == ()


def test_concurrent_updates_lose_nothing(store):
    put(store, "svc")

    def add(thread):
        for i in range(25):
            new = Host(f"10.{thread}.0.{i}", 80)
            store.update("svc", lambda s, new=new: s.with_host(new)[0])

    threads = [threading.Thread(target=add, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.get("svc").hosts) == 200


def test_size_counts_services_and_hosts(store):
    assert store.size() == (0, 0)
    put(store, "a", host("10.0.0.1"), host("10.0.0.2"))
    put(store, "b")
    put(store, "c", host("10.0.0.3"))
    assert store.size() == (3, 3)


def client_row(node="envoy-1", name="web", last_poll=100.0, polls=1, **fields):
    values = dict(
        cluster="edge",
        envoy_version="1.40.0",
        resource_names=(name,),
        api="v3",
        version_held=None,
        rejected_polls=0,
    )
    values.update(fields)
    return ClientRow(node_id=node, resource_name=name, last_poll=last_poll, polls=polls, **values)


def test_client_rows_add_up_polls_and_keep_the_latest_poll(store):
    assert store.clients() == []
    # Two workers report the same node: their poll counts add up, the latest poll's fields win,
    # whichever order the batches arrive in; rejections of an older version sent are dropped.
    newer = dict(version_held="v1", sent_version="v3", rejected_polls=1)
    store.record_clients([client_row(last_poll=105.0, polls=3, **newer)], Retention(forget_before=0))
    older = dict(version_held="v1", sent_version="v2", rejected_polls=4)
    store.record_clients([client_row(last_poll=101.0, polls=2, **older)], Retention(forget_before=0))
    store.record_clients([client_row(node="envoy-2", last_poll=102.0, resource_names=("web", "api"))], Retention(0))
    assert store.clients() == [
        client_row(last_poll=105.0, polls=5, **newer),
        client_row(node="envoy-2", last_poll=102.0, resource_names=("web", "api")),
    ]
    # Rejections of the same version sent add up, whichever worker counted them.
    store.record_clients([client_row(last_poll=103.0, polls=2, **{**newer, "rejected_polls": 2})], Retention(0))
    assert store.clients()[0] == client_row(last_poll=105.0, polls=7, **{**newer, "rejected_polls": 3})


def test_client_rows_not_seen_for_long_are_forgotten(store):
    store.record_clients([client_row(node="old", last_poll=10.0), client_row(node="new", last_poll=50.0)], Retention(0))
    store.record_clients([client_row(node="newer", last_poll=60.0)], Retention(forget_before=20.0))
    assert [row.node_id for row in store.clients()] == ["new", "newer"]


def test_client_rows_past_the_bounds_go_least_recently_polled_first(store):
    """At most max_rows_per_node rows per node and max_rows in all; what goes is what polled least
    recently, whether it is in the batch or was recorded before, and the store says how many went."""
    bounds = Retention(forget_before=0, max_rows=5, max_rows_per_node=3)
    first = [client_row(node="edge", name=f"s{i}", last_poll=100.0 + i) for i in range(4)]
    assert store.record_clients(first, bounds) == 1
    assert [(r.node_id, r.resource_name) for r in store.clients()] == [("edge", "s1"), ("edge", "s2"), ("edge", "s3")]
    flood = [client_row(node=f"made-up-{i}", last_poll=200.0 + i) for i in range(4)]
    assert store.record_clients(flood, bounds) == 2
    assert [(r.node_id, r.last_poll) for r in store.clients()] == [
        ("edge", 103.0), ("made-up-0", 200.0), ("made-up-1", 201.0), ("made-up-2", 202.0), ("made-up-3", 203.0),
    ]  # fmt: skip
    # An Envoy that keeps polling stays: its new poll makes it the most recent.
    assert store.record_clients([client_row(node="edge", name="s3", last_poll=300.0)], bounds) == 0
    assert store.record_clients([client_row(node="new", last_poll=301.0)], bounds) == 1
    assert ("edge", "s3") in [r.key for r in store.clients()] and len(store.clients()) == 5


def same_data_elsewhere(store):
    """Another store object on the same data, as another worker would open it (memory:// has none;
    a Redis store hears its own writes the way it hears every other replica's)."""
    path = getattr(store, "path", None)
    return open_store(f"sqlite:///{path}", version_of) if path else store


def test_wait_for_change_wakes_for_a_write_from_another_connection(store, tmp_path):
    other = same_data_elsewhere(store)
    store.wait_for_change(0.05)  # the first call may report what happened before it (allowed)
    assert store.wait_for_change(0.05) is False  # nothing written since: it times out
    woke = []
    waiter = threading.Thread(target=lambda: woke.append(store.wait_for_change(5)))
    waiter.start()
    time.sleep(0.05)
    put(other, "svc", host("10.0.0.1"))
    waiter.join(6)
    assert woke == [True]
    assert store.wait_for_change(0.05) is False  # that change was reported once
    put(other, "svc", host("10.0.0.2"))  # a change between two waits is not lost
    assert store.wait_for_change(5) is True


def test_wait_for_change_wakes_for_a_batch_of_client_rows(store):
    """Propagation waits sleep on the change signal and read the clients view when woken."""
    other = same_data_elsewhere(store)  # (opening a store may itself signal a change)
    store.wait_for_change(0.05)
    assert store.wait_for_change(0.05) is False
    woke = []
    waiter = threading.Thread(target=lambda: woke.append(store.wait_for_change(5)))
    waiter.start()
    time.sleep(0.05)
    other.record_clients([client_row(version_held="v1")], Retention(0))
    waiter.join(6)
    assert woke == [True]


def test_a_version_read_anywhere_follows_every_write_that_returned(store, clock):
    # The poll path's one read, from another store object on the same data (another worker) that
    # read the version before each write: once the write returned, it reads the new version.
    other = same_data_elsewhere(store)
    for i in range(100):
        writer, reader = (store, other) if i % 2 else (other, store)
        before = reader.version("svc")
        change = put(writer, "svc", host("10.0.0.1"), host(f"10.0.1.{i + 1}"))
        assert change.version_after != before
        assert reader.version("svc") == change.version_after
        assert reader.version(f"absent-{i % 3}") is None
    writer, reader = store, other  # the store on the test's clock writes from here
    writer.update("svc", lambda current: None)
    assert reader.version("svc") is None
    put(writer, "svc", host("10.0.0.9", ttl=5))
    assert reader.version("svc") == writer.version("svc") is not None
    clock.advance(6)
    [expired] = writer.expire()  # a TTL sweep is a writer too
    assert reader.version("svc") == expired.version_after == version_of("svc", Service("svc"))


def test_count_follows_creates_and_deletes(store):
    assert store.count() == 0
    for name in ("a", "b", "c"):
        put(store, name, host("10.0.0.1"))
    store.update("b", lambda current: None)
    assert store.count() == 2


def test_concurrent_creates_cannot_pass_the_service_limit(store):
    # The registry counts services inside the store's atomic step: a backend must
    # answer count() from the state that step commits against.
    registry = Registry(store, Limits(max_services=5))
    start = threading.Barrier(8)
    outcomes = []

    def create(thread):
        start.wait()
        for i in range(3):
            try:
                registry.create(f"svc-{thread}-{i}", {"hosts": []})
                outcomes.append("created")
            except LimitExceeded:
                outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("created") == 5 and outcomes.count("refused") == 19
    assert store.count() == len(store.services()) == 5


def test_a_closed_store_reconnects_on_next_use_and_keeps_its_contents(store):
    # `python -m eds_server` runs the start-up (TTL sweep, seed) on a store in
    # the master, closes it, and every forked worker goes on using that object.
    put(store, "svc", host("10.0.0.1"))
    version = store.version("svc")
    store.close()
    assert store.version("svc") == version
    put(store, "svc", host("10.0.0.1"), host("10.0.0.2"))
    assert len(store.get("svc").hosts) == 2
    store.ping()


def test_sqlite_never_acknowledges_a_write_into_a_file_that_is_gone(tmp_path, monkeypatch):
    """The file deleted while a write runs: refused before COMMIT (nothing written); deleted between COMMIT
    and its answer (the write went into a file nobody will open again): 503 saying it may be lost, never a 2xx."""
    from eds_server.store import CommitOutcomeUnknown, StoreUnavailable
    from eds_server.store import sqlite as sqlite_store

    db = tmp_path / "registry.db"
    store = open_store(f"sqlite:///{db}", version_of)
    host = parse_host({"ip_address": "10.0.0.1", "port": 80})

    def delete_meanwhile(current):
        db.rename(tmp_path / "moved-away.db")
        return Service("web", (host,))

    with pytest.raises(StoreUnavailable, match="nothing was changed"):
        store.update("web", delete_meanwhile)
    (tmp_path / "moved-away.db").rename(db)
    assert store.get("web") is None  # rolled back: nothing reached the file

    checked = []
    real_identity = sqlite_store._identity

    def gone_after_commit(path):
        checked.append(path)
        return None if len(checked) == 3 else real_identity(path)  # before the write, before COMMIT, after it

    monkeypatch.setattr(sqlite_store, "_identity", gone_after_commit)
    with pytest.raises(CommitOutcomeUnknown, match="may be lost"):
        store.update("web", lambda current: Service("web", (host,)))
    store.close()


# Another worker's write, under way: it holds SQLite's write lock for a second.
HOLD_THE_WRITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(1.0)
conn.execute("COMMIT")
"""
# A gevent worker: one greenlet writes (and must wait for the lock), another answers requests meanwhile.
WRITE_BESIDE_OTHER_REQUESTS = """
from gevent import monkey
monkey.patch_all()
import sys, time
import gevent
from eds_server.model import Service, parse_host
from eds_server.store import open_store
from eds_server.xds import version_of

store = open_store(f"sqlite:///{sys.argv[1]}", version_of)
answered = []
def other_requests():
    while True:
        answered.append(time.monotonic())
        gevent.sleep(0.01)
gevent.spawn(other_requests)
started = time.monotonic()
store.update("web", lambda current: Service("web", (parse_host({"ip_address": "10.0.0.1", "port": 80}),)))
done = time.monotonic()
print(done - started, sum(started < at < done for at in answered), len(store.get("web").hosts))
"""


def test_a_sqlite_write_waiting_for_another_workers_lets_its_own_worker_answer_meanwhile(tmp_path):
    """gevent cannot switch inside sqlite's own wait for a lock: a worker whose write waited there
    answered no poll until the other worker's write ended."""
    import subprocess
    import sys

    db = tmp_path / "registry.db"
    created = open_store(f"sqlite:///{db}", version_of)
    created.update("other", lambda current: Service("other"))
    created.close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_WRITE_LOCK, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        worker = subprocess.run(
            [sys.executable, "-c", WRITE_BESIDE_OTHER_REQUESTS, str(db)], capture_output=True, text=True, timeout=60
        )
    finally:
        holder.kill()
        holder.wait()
    assert worker.returncode == 0, worker.stderr
    waited, answered_meanwhile, hosts = worker.stdout.split()
    assert float(waited) > 0.3 and int(hosts) == 1  # it did wait for the lock, then wrote
    assert int(answered_meanwhile) >= 10, worker.stdout
