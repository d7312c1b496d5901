"""The Redis store on Redis Sentinel (real redis-server and redis-sentinel processes): the URL, a
failover seen from two replicas' stores, writes acknowledged only once a replica holds them, TLS,
and TTL hosts that the store's outage does not expire."""

from __future__ import annotations

import pytest

from eds_server.model import Service, parse_host
from eds_server.store import CommitOutcomeUnknown, StoreUnavailable, check_store_url, open_store
from eds_server.xds import version_of
from scripts.pki import make_pki
from scripts.processes import wait_until

DATA_PASSWORD = "data-s3cret"
SENTINEL_PASSWORD = "sentinel-s3cret"


def host(ip, port=80, **fields):
    return parse_host({"ip_address": ip, "port": port, **fields})


def add(ip, port=80):
    return lambda service: (service or Service("web")).with_host(host(ip, port))[0]


def ports(store, name="web"):
    return sorted(h.port for h in store.get(name).hosts)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3/eds/0",
        "redis+sentinel://:pw@[::1]:26379/eds",
        "rediss+sentinel://user:pw@sentinel.internal/eds/2?sentinel_password=x&ssl_cert_reqs=required",
    ],
)
def test_sentinel_urls_accepted(url):
    assert check_store_url(url).endswith("+sentinel")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://:topsecret@h1:26379,h2:99999/eds/0?sentinel_password=topsecret", "out of range"),
        ("redis+sentinel://:topsecret@h1,/eds/0", "names no Sentinel host"),
        ("redis+sentinel://:topsecret@h1/0?sentinel_password=topsecret", "/PRIMARY_NAME/DB"),
        ("redis+sentinel://:topsecret@h1/eds/zero", "/PRIMARY_NAME/DB"),
        ("redis+sentinel://:topsecret@h1", "/PRIMARY_NAME"),
        ("redis+sentinel://:topsecret@h1/eds/0?sokcet_timeout=1&sentinel_password=topsecret", "sokcet_timeout"),
    ],
)
def test_bad_sentinel_urls_are_refused_without_showing_a_password(url, says):
    with pytest.raises(ValueError, match=says) as refused:
        check_store_url(url)
    assert "topsecret" not in str(refused.value)


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
    a.update("web", add("10.0.0.3", 8003))
    assert ports(b) == [8001, 8002, 8003]

    said = str(refused.value) + caplog.text
    assert DATA_PASSWORD not in said and SENTINEL_PASSWORD not in said
    for store in (a, b):
        store.close()


def test_a_write_is_acknowledged_only_once_a_replica_holds_it(sentinel_cluster):
    cluster = sentinel_cluster()
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
        replicas=1, sentinels=1, password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD, tls_files=files
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


def test_hosts_whose_heartbeats_an_outage_refused_get_one_ttl_once_writes_resume(redis_server, clock):
    server = redis_server()
    store = open_store(server.url, version_of, clock=clock)
    ttl = 10
    store.update("web", lambda s: Service("web", tuple(host("10.0.0.1", p, ttl=ttl).stamped(clock()) for p in (1, 2))))

    server.stop()
    clock.advance(ttl + 5)  # both deadlines pass while heartbeats are refused
    with pytest.raises(StoreUnavailable):
        store.update("web", add("10.0.0.1", 1))
    server.start()
    store.ping()  # writable again: now
    writable_again = clock()
    assert store.expire() == []
    # A replica that saw no outage of its own (started after it) keeps the same rule.
    other = open_store(server.url, version_of, clock=clock)
    assert other.writable_since() == writable_again
    assert other.expire() == []

    clock.advance(ttl / 2)
    beat = {"ip_address": "10.0.0.1", "port": 1, "ttl": ttl}
    store.update("web", lambda s: s.with_heartbeat(parse_host(beat), beat, clock())[0])
    clock.advance(ttl / 2)  # one ttl since writes resumed: the host that stayed silent goes
    [change] = other.expire()
    assert [h.port for h in change.after.hosts] == [1]
    for each in (store, other):
        each.close()
