"""The Redis store on Redis Sentinel (real redis-server and redis-sentinel processes): the URL, a
failover seen from two replicas' stores, writes acknowledged only once a replica holds them, TLS,
and TTL hosts that the store's outage does not expire."""

from __future__ import annotations

import re
import time

import pytest

from eds_server.model import Service, parse_host
from eds_server.settings import SettingsError, load_settings, store_options
from eds_server.store import CommitOutcomeUnknown, StoreUnavailable, check_store_url, open_store
from eds_server.store.base import load_service
from eds_server.store.redis_primary import primary_for
from eds_server.xds import version_of
from scripts.pki import make_pki
from scripts.processes import REPO, wait_until

DATA_PASSWORD = "data/s3cret:with@odd,chars"  # percent-encoded in the URL
SENTINEL_PASSWORD = "sentinel-s3cret"


def host(ip, port=80, **fields):
    return parse_host({"ip_address": ip, "port": port, **fields})


def add(ip, port=80):
    return lambda service: (service or Service("web")).with_host(host(ip, port))[0]


def ports(store, name="web"):
    return sorted(h.port for h in store.get(name).hosts)


def test_the_readme_sentinel_url_is_a_store_url_shown_without_its_passwords():
    readme = (REPO / "README.md").read_text()
    [url] = re.findall(r"EDS_STORE='(rediss\+sentinel://[^']+)'", readme)
    assert check_store_url(url) == "rediss+sentinel"
    where = primary_for(url).where
    assert where == "rediss+sentinel://:***@10.0.0.21:26379,10.0.0.22:26379,10.0.0.23:26379/eds-primary/0"


@pytest.mark.parametrize(("value", "min_replicas"), [(None, None), ("auto", None), ("0", 0), ("2", 2)])
def test_the_replicas_a_write_waits_for_is_a_setting(value, min_replicas):
    environ = {} if value is None else {"EDS_REDIS_MIN_REPLICAS": value}
    assert store_options(load_settings([], environ)) == {"min_replicas": min_replicas}


def test_a_number_of_replicas_that_is_not_one_is_refused():
    with pytest.raises(SettingsError, match="redis_min_replicas 'all': must be auto or a number"):
        load_settings([], {"EDS_REDIS_MIN_REPLICAS": "all"})


def test_two_replicas_stores_ride_a_failover_without_a_restart(sentinel_cluster, caplog):
    cluster = sentinel_cluster(password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD)
    a, b = open_store(cluster.url, version_of), open_store(cluster.url, version_of)
    a.update("web", add("10.0.0.1", 8001))
    before = a.version("web")
    wait_until(lambda: b._mirror and "web" in b._mirror, 5, what="b followed the write")

    old = cluster.kill_primary()
    with pytest.raises(StoreUnavailable, match="a failover is under way") as refused:
        a.update("web", add("10.0.0.2", 8002))
    # Polls meanwhile: the last state followed, as before the failover.
    assert a.version("web") == b.version("web") == before
    assert a.get("web").hosts[0].port == 8001

    # Writes resume on the new primary without a restart, and the other replica's follower hears them.
    wait_until(lambda: b.update("web", add("10.0.0.2", 8002)), 30, 0.1, what="a write through b after the failover")
    assert cluster.primary is not old
    assert wait_until(lambda: a.wait_for_change(1) and ports(a) == [8001, 8002], 10, what="a hearing b's write")
    assert a._mirror["web"][1] == b.version("web") != before
    # The new primary's other replica may still be syncing with it: until it confirms, a write
    # is applied but answered 503 (CommitOutcomeUnknown); repeating the same host is harmless.
    wait_until(lambda: a.update("web", add("10.0.0.3", 8003)), 30, 0.1, what="a write through a after the failover")
    assert ports(b) == [8001, 8002, 8003]

    said = str(refused.value) + caplog.text
    assert DATA_PASSWORD not in said and SENTINEL_PASSWORD not in said
    for store in (a, b):
        store.close()


def test_a_primary_that_hung_through_the_failover_keeps_no_acknowledged_write(sentinel_cluster, caplog):
    """SIGSTOP the primary until Sentinel has promoted a replica, then let it run again: it still
    calls itself primary (until Sentinel reconfigures it, up to ten seconds later) and the stores'
    connections to it are open. The stores leave it for the primary Sentinel names, and a write it
    might still take has no replica to hold it, so it is not acknowledged."""
    cluster = sentinel_cluster()
    writer, listener = open_store(cluster.url, version_of), open_store(cluster.url, version_of)
    writer.update("web", add("10.0.0.1", 1))
    old = cluster.primary
    old.pause()
    try:
        new = cluster.primary  # once Sentinel has promoted another
    finally:
        old.resume()
    acknowledged = [1]
    for port in range(2, 40):
        try:
            writer.update("web", add("10.0.0.1", port))
            acknowledged.append(port)
        except StoreUnavailable:
            pass
        time.sleep(0.05)
    assert len(acknowledged) > 1
    on_the_new_primary = load_service(new.client().hget("eds:service:web", "record"))
    assert set(acknowledged) <= {h.port for h in on_the_new_primary.hosts}
    # The listener follows the new primary: it hears a write made there.
    writer.update("web", add("10.0.0.1", 99))
    wait_until(lambda: listener.wait_for_change(1) and 99 in ports(listener), 30, what="the listener following")
    assert "another server is the primary now" in caplog.text
    for store in (writer, listener):
        store.close()


def test_a_write_is_acknowledged_only_once_a_replica_holds_it(sentinel_cluster):
    cluster = sentinel_cluster(socket_timeout=4)
    store = open_store(cluster.url, version_of)  # min_replicas "auto": the primary has replicas, so 1
    unreplicated = open_store(cluster.url, version_of, min_replicas=0)
    store.update("web", add("10.0.0.1", 8001))
    replicas = [server for server in cluster.servers if server is not cluster.primary]
    for replica in replicas:
        replica.pause()  # SIGSTOP: connected, but acknowledging nothing
    try:
        with pytest.raises(CommitOutcomeUnknown, match="may or may not survive a failover") as unconfirmed:
            store.update("web", add("10.0.0.2", 8002))
        assert "0 confirmed it" in str(unconfirmed.value)
        assert store.writes_refused_at() is not None  # no TTL host expires for one ttl
        assert ports(store) == [8001, 8002]  # on the primary, but held by no replica
        unreplicated.update("web", add("10.0.0.3", 8003))
    finally:
        for replica in replicas:
            replica.resume()
    store.update("web", add("10.0.0.4", 8004))
    assert ports(store) == [8001, 8002, 8003, 8004]
    for replica in replicas:
        assert wait_until(lambda r=replica: r.client().hget("eds:service:web", "version"), 5, what="replicated")
    for each in (store, unreplicated):
        each.close()


def test_a_lone_server_without_replicas_is_not_waited_for_unless_asked(redis_url):
    automatic = open_store(redis_url, version_of)
    automatic.update("web", add("10.0.0.1"))
    asked = open_store(redis_url, version_of, min_replicas=1)
    with pytest.raises(CommitOutcomeUnknown, match="1 replica"):
        asked.update("web", add("10.0.0.2"))
    for each in (automatic, asked):
        each.close()


def test_tls_to_sentinel_and_servers_with_passwords_apart(sentinel_cluster, tmp_path):
    pki = make_pki(tmp_path / "pki")
    files = {"cert": pki.server.cert, "key": pki.server.key, "ca": pki.ca}
    cluster = sentinel_cluster(
        replicas=1,
        sentinels=1,
        password=DATA_PASSWORD,
        sentinel_password=SENTINEL_PASSWORD,
        tls_files=files,
        socket_timeout=10,
    )
    assert cluster.url.startswith("rediss+sentinel://")
    store = open_store(cluster.url, version_of)
    store.update("web", add("10.0.0.1", 8001))
    assert ports(store) == [8001]
    assert cluster.primary.client().hget("eds:service:web", "version") is not None
    plain = open_store(cluster.url.replace("rediss+", "redis+").split("&ssl_ca_certs")[0], version_of)
    with pytest.raises(StoreUnavailable, match="no Sentinel answers"):
        plain.ping()
    wrong = open_store(cluster.url.replace(SENTINEL_PASSWORD, "wrong"), version_of)
    with pytest.raises(StoreUnavailable) as refused:
        wrong.ping()
    assert "sentinel_password" in str(refused.value) and "wrong" not in str(refused.value)
    for each in (store, plain, wrong):
        each.close()


def test_a_ttl_host_gets_one_whole_ttl_after_the_store_last_refused_a_write(redis_server, clock):
    server = redis_server()
    store = open_store(server.url, version_of, clock=clock)
    ttl = 10
    store.update("web", lambda s: Service("web", tuple(host("10.0.0.1", p, ttl=ttl).stamped(clock()) for p in (1, 2))))

    server.stop()
    clock.advance(ttl + 5)  # both deadlines pass while heartbeats are refused
    with pytest.raises(StoreUnavailable):
        store.update("web", add("10.0.0.1", 1))
    server.start()
    store.ping()  # reachable again: writes were refused until now
    assert store.expire() == []
    # A replica that saw no outage of its own (started after it) keeps the same rule.
    other = open_store(server.url, version_of, clock=clock)
    assert other.writes_refused_at() == clock()
    assert other.expire() == []

    clock.advance(ttl / 2)
    beat = {"ip_address": "10.0.0.1", "port": 1, "ttl": ttl}
    store.update("web", lambda s: s.with_heartbeat(parse_host(beat), beat, clock())[0])
    clock.advance(ttl / 2)  # one ttl since the last refusal: the host that stayed silent goes
    [change] = other.expire()
    assert [h.port for h in change.after.hosts] == [1]
    for each in (store, other):
        each.close()
