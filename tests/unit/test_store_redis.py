"""What the Redis store adds to the common contract: many handles (replicas) on one Redis,
outages, TLS with a password, and a commit whose answer is lost in flight."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest
import trustme

from eds_server.model import Host, Service, parse_host
from eds_server.store import CommitOutcomeUnknown, StoreUnavailable, check_store_url, open_store
from eds_server.xds import version_of
from scripts.processes import free_port, wait_until


def host(ip, port=80, **fields):
    return parse_host({"ip_address": ip, "port": port, **fields})


@pytest.fixture
def replicas(clock):
    """`replicas(url, count)`: `count` stores on one Redis, as `count` replicas (or workers) hold them.

    Every store opened is closed when the test ends, before the test's redis-server stops (list this
    fixture after it): an open store's follower would report the server gone later, outside any test.
    """
    opened = []

    def open_replicas(url, count=2):
        stores = [open_store(url, version_of, clock=clock) for _ in range(count)]
        opened.extend(stores)
        return stores

    yield open_replicas
    for store in opened:
        store.close()


def run_together(*targets):
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)


def test_replicas_see_each_others_writes_with_the_same_version(redis_url, replicas):
    a, b = replicas(redis_url)
    change = a.update("web", lambda s: Service("web", (host("10.0.0.1"),)))
    assert b.version("web") == a.version("web") == change.version_after
    assert b.get("web") == change.after
    b.update("web", lambda s: s.with_host(host("10.0.0.2"))[0])
    assert a.version("web") == b.version("web") == version_of("web", a.get("web"))
    assert [s.name for s in a.services()] == ["web"]


def test_concurrent_writers_on_two_replicas_lose_nothing(redis_url, replicas):
    stores = replicas(redis_url)
    stores[0].update("svc", lambda s: Service("svc"))

    def writer(store, thread):
        def add_hosts():
            for i in range(20):
                new = Host(f"10.{thread}.0.{i}", 80)
                store.update("svc", lambda s, new=new: s.with_host(new)[0])

        return add_hosts

    run_together(*(writer(stores[t % 2], t) for t in range(6)))
    assert len(stores[1].get("svc").hosts) == 120


def test_an_expiry_raced_by_every_replica_happens_once(redis_url, clock, replicas):
    stores = replicas(redis_url, count=3)
    names = [f"svc-{i}" for i in range(15)]
    for name in names:
        stores[0].update(name, lambda s, name=name: Service(name, (host("10.0.0.1", ttl=5).stamped(clock()),)))
    clock.advance(6)
    applied: list[str] = []

    def sweep(store):
        return lambda: applied.extend(change.name for change in store.expire())

    run_together(*(sweep(store) for store in stores for _ in range(2)))
    assert sorted(applied) == sorted(names)
    assert all(stores[1].get(name).hosts == () for name in names)
    assert stores[2].due_for_expiry(clock()) == []


def test_while_redis_is_away_polls_read_the_last_state_and_writes_fail(redis_server, replicas):
    server = redis_server()
    store, other_replica = replicas(server.url)
    store.update("web", lambda s: Service("web", (host("10.0.0.1"), host("10.0.0.2"))))
    store.update("api", lambda s: Service("api", (host("10.0.0.9"),)))
    store.update("api", lambda s: None)
    version, service = store.version("web"), store.get("web")
    # Every replica follows every change, whether or not it was asked for that service.
    wait_until(lambda: other_replica._mirror == store._mirror and "web" in store._mirror, 5, what="mirrors agree")

    server.stop()
    for replica in (store, other_replica):
        assert replica.version("web") == version and replica.get("web") == service
        assert replica.version("api") is None and replica.get("api") is None  # deleted: still "no endpoints"
    with pytest.raises(StoreUnavailable, match="unreachable since"):
        store.update("web", lambda s: s.with_host(host("10.0.0.3"))[0])
    with pytest.raises(StoreUnavailable):
        store.services()
    with pytest.raises(StoreUnavailable, match="discovery answers from the last state"):
        store.ping()

    server.start()  # same port, same AOF directory
    store.ping()
    other_replica.update("web", lambda s: s.with_host(host("10.0.0.3"))[0])
    assert [h.ip_address for h in store.get("web").hosts] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    wait_until(lambda: store._mirror == other_replica._mirror and len(store._mirror) == 1, 5, what="mirrors follow")


def test_a_hung_redis_is_waited_for_once_then_the_mirror_answers(redis_server, replicas):
    server = redis_server()
    [store] = replicas(server.url, 1)
    store.update("web", lambda s: Service("web", (host("10.0.0.1"),)))
    version = store.version("web")
    wait_until(lambda: store._mirror and "web" in store._mirror, 5, what="the mirror loaded")
    server.pause()
    try:
        assert store.version("web") == version  # after the socket timeout
        assert "TimeoutError" in store.unavailable_reason()
        assert store.version("web") == version  # without asking Redis: within RETRY_AFTER_TIMEOUT
        with pytest.raises(StoreUnavailable):
            store.update("web", lambda s: None)
    finally:
        server.resume()
    wait_until(lambda: store.ping() is None, 5, what="ping answered")
    store.update("web", lambda s: None)
    assert store.version("web") is None


def test_a_replica_started_while_redis_is_away_answers_503_then_recovers(redis_server, replicas):
    server = redis_server()
    port = server.port
    server.stop()
    [store] = replicas(f"redis://127.0.0.1:{port}/0", 1)
    with pytest.raises(StoreUnavailable):
        store.version("web")
    server.start()
    store.ping()  # a ping (readyz, the sweeper) ends the outage for the poll path at once
    assert store.version("web") is None


def test_tls_and_a_password_in_the_url(redis_server, tmp_path, replicas):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = {"cert": tmp_path / "redis.crt", "key": tmp_path / "redis.key", "ca": tmp_path / "ca.pem"}
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    server = redis_server(password="s3cret/with:odd@chars", tls_files=files)

    [store] = replicas(server.url, 1)
    store.update("web", lambda s: Service("web", (host("10.0.0.1"),)))
    assert store.get("web").hosts[0].ip_address == "10.0.0.1"
    assert "s3cret" not in store.where

    [wrong] = replicas(server.url.replace("s3cret", "wrong"), 1)
    with pytest.raises(StoreUnavailable) as refused:
        wrong.ping()
    assert "wrong" not in str(refused.value)
    [plain] = replicas(server.url.replace("rediss://", "redis://").split("?")[0], 1)
    with pytest.raises(StoreUnavailable):
        plain.ping()


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("redis://localhost:6379/0", "redis"),
        ("redis://10.0.0.7", "redis"),
        ("rediss://:pw@redis.internal:6380/3?ssl_cert_reqs=required", "rediss"),
        ("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3/eds/0", "redis+sentinel"),
        ("redis+sentinel://:pw@[::1]:26379/eds", "redis+sentinel"),
        ("rediss+sentinel://u:pw@sentinel.internal/eds/2?sentinel_password=x&ssl_cert_reqs=none", "rediss+sentinel"),
    ],
)
def test_redis_urls_accepted(url, scheme):
    assert check_store_url(url) == scheme


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://:topsecret@host:99999/0", "out of range"),
        ("redis://:topsecret@/0", "names no host"),
        ("redis://:topsecret@host:6379/zero", "database number"),
        ("redis://:topsecret@host:6379/0?sokcet_timeout=1", "sokcet_timeout"),
        ("redis://:topsecret@host:6379/0?socket_timeout=soon", "socket_timeout"),
        ("redis+sentinel://:topsecret@h1:26379,h2:99999/eds/0?sentinel_password=topsecret", "out of range"),
        ("redis+sentinel://:topsecret@h1,/eds/0", "names no Sentinel host"),
        ("redis+sentinel://:topsecret@h1/0?sentinel_password=topsecret", "/PRIMARY_NAME/DB"),
        ("redis+sentinel://:topsecret@h1/eds/zero", "/PRIMARY_NAME/DB"),
        ("redis+sentinel://:topsecret@h1", "/PRIMARY_NAME"),
        ("redis+sentinel://:topsecret@h1/eds/0?sokcet_timeout=1&sentinel_password=topsecret", "sokcet_timeout"),
    ],
)
def test_bad_redis_urls_are_refused_without_showing_a_password(url, says):
    with pytest.raises(ValueError, match=says) as refused:
        check_store_url(url)
    assert "topsecret" not in str(refused.value)


class ExecCutter:
    """A TCP proxy in front of Redis that breaks the first connection sending EXEC:
    after Redis got it (`after_exec`: the write applied, its answer lost; with
    `after_exec_then_gone` no new connection is accepted after that) or before
    (`before_exec`: nothing applied). Every other byte passes through."""

    def __init__(self, redis_port: int, when: str):
        self.redis_port, self.when = redis_port, when
        self.port = free_port()
        self.cut = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        close(self._listener)  # shutdown first: a bare close() leaves a socket blocked in accept() listening

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.redis_port))
            cut_here = threading.Event()
            threading.Thread(target=self._to_redis, args=(client, upstream, cut_here), daemon=True).start()
            threading.Thread(target=self._to_client, args=(upstream, client, cut_here), daemon=True).start()

    def _to_redis(self, client: socket.socket, upstream: socket.socket, cut_here: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if b"EXEC\r\n" in data and not self.cut.is_set():
                    self.cut.set()
                    cut_here.set()
                    if self.when == "before_exec":
                        break
                upstream.sendall(data)
        if self.when == "before_exec" or not cut_here.is_set():
            close(client, upstream)

    def _to_client(self, upstream: socket.socket, client: socket.socket, cut_here: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if cut_here.is_set():
                    break  # Redis answered the EXEC, so it ran it: drop the answer
                client.sendall(data)
        if cut_here.is_set() and self.when == "after_exec_then_gone":
            self.close()  # Redis looks gone: the client cannot ask whether its write landed
        close(client, upstream)


def close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@pytest.mark.parametrize("when", ["after_exec", "before_exec"])
def test_a_commit_cut_in_flight_is_applied_exactly_once(redis_url, when, replicas):
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    cutter = ExecCutter(redis_port, when)
    try:
        [store] = replicas(f"redis://127.0.0.1:{cutter.port}/0", 1)

        def add_the_next_host(service):
            # Not idempotent: applied twice, it would add two hosts.
            service = service or Service("web")
            return service.with_host(host("10.0.0.1", 8000 + len(service.hosts)))[0]

        change = store.update("web", add_the_next_host)
        assert cutter.cut.is_set()
        assert [h.port for h in store.get("web").hosts] == [8000]
        assert change.after == store.get("web") and change.version_after == store.version("web")
    finally:
        cutter.close()


def test_a_commit_whose_outcome_cannot_be_known_says_so(redis_url, replicas):
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    cutter = ExecCutter(redis_port, "after_exec_then_gone")
    [store] = replicas(f"redis://127.0.0.1:{cutter.port}/0", 1)
    with pytest.raises(CommitOutcomeUnknown, match="may have been applied"):
        store.update("web", lambda s: Service("web", (host("10.0.0.1"),)))
    [direct] = replicas(redis_url, 1)
    assert [h.ip_address for h in direct.get("web").hosts] == ["10.0.0.1"]
