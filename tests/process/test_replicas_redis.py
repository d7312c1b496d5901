"""Real eds-server replicas (gunicorn, several workers each) sharing one real Redis."""

import requests

from scripts.processes import wait_until
from tests.helpers.listing import registry_listing
from tests.process.test_server_process import add_host, assert_the_next_poll_serves_every_write, endpoints, poll


def test_a_write_on_one_replica_is_served_by_the_other_on_its_next_poll(eds_server, redis_url):
    a, b = eds_server(store=redis_url), eds_server(store=redis_url)
    # Writes alternate a, b, a...; each is polled on the other replica first.
    assert_the_next_poll_serves_every_write([a, b], [b, a], range(9001, 9013))
    # Same state, same version, same bytes: Envoy never flips between replicas.
    assert poll(a).content == poll(b).content


def test_a_ttl_expiry_is_applied_once_across_replicas(eds_server, redis_url):
    replicas = [eds_server(store=redis_url, workers=2) for _ in range(2)]
    assert add_host(replicas[0], 9001, ttl=1).status_code == 201
    assert add_host(replicas[1], 9002).status_code == 201
    wait_until(lambda: endpoints(poll(replicas[1])) == [9002], timeout=10, what="the TTL host expired")
    # Four sweepers (two workers in each of two replicas) raced for it; one applied it.
    logs = "".join(replica.log_path.read_text() for replica in replicas)
    assert logs.count("expire service=web hosts=127.0.0.1:9001") == 1


def test_redis_away_polls_keep_their_answers_writes_503_then_everything_resumes(eds_server, redis_server):
    redis = redis_server()
    # One worker each, so that the writes below prove every worker loaded the registry
    # (a worker that never used the store before Redis went away has nothing to answer with).
    replicas = [eds_server(store=redis.url, workers=1), eds_server(store=redis.url, workers=1)]
    for port in (9001, 9002, 9003):
        assert add_host(replicas[port % 2], port).status_code == 201
    before = poll(replicas[0])
    version = before.json()["version_info"]

    redis.stop()
    for replica in replicas:
        for _ in range(4):
            assert poll(replica, version).status_code == 304
            again = poll(replica)
            assert again.status_code == 200 and again.content == before.content
        refused = add_host(replica, 9004)
        assert refused.status_code == 503
        assert "unavailable, nothing was changed" in refused.json()["message"]
        ready = requests.get(f"{replica.url}/readyz", timeout=5)
        assert ready.status_code == 503
        assert "discovery answers from the last state" in ready.json()["store"]
    assert "unreachable" in replicas[0].log_path.read_text()

    redis.start()
    wait_until(lambda: all(requests.get(f"{r.url}/readyz", timeout=5).ok for r in replicas), timeout=10, what="ready")
    assert add_host(replicas[1], 9004).status_code == 201
    assert endpoints(poll(replicas[0])) == [9001, 9002, 9003, 9004]
    assert "reachable again" in replicas[0].log_path.read_text()


def test_a_redis_crash_with_aof_keeps_every_host(eds_server, redis_server):
    redis = redis_server(appendfsync="always")
    replicas = [eds_server(store=redis.url), eds_server(store=redis.url)]
    for index, name in enumerate(("web", "api", "db")):
        hosts = [{"ip_address": f"10.0.{index}.{i}", "port": 8000 + i, "ttl": 3600} for i in range(1, 6)]
        assert requests.put(f"{replicas[index % 2].url}/edsservice/{name}", json={"hosts": hosts}, timeout=5).ok
    assert add_host(replicas[1], 9001).status_code == 201  # the last write, acknowledged just before the crash
    before = registry_listing(replicas[0].url)

    redis.crash()  # SIGKILL: only what was fsynced to the AOF survives
    redis.start()
    after = wait_until(lambda: registry_listing(replicas[1].url), timeout=10, what="the registry read back")
    assert after == before
    assert sum(len(s["hosts"]) for s in after) == 16
