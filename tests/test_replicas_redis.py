"""Real eds-server replicas (gunicorn, several workers each) sharing one real Redis."""

import requests

from .processes import wait_until
from .test_server_process import endpoints, poll


def write(server, port, **fields):
    return requests.post(
        f"{server.url}/edsservice/web/hosts",
        json={"ip_address": "127.0.0.1", "port": port, **fields},
        timeout=5,
        headers={"Connection": "close"},
    )


def test_a_write_on_one_replica_is_served_by_the_other_on_its_next_poll(eds_server, redis_url):
    replicas = [eds_server(store=redis_url), eds_server(store=redis_url)]
    held = None
    for port in range(9001, 9013):
        writer, other = replicas[port % 2], replicas[(port + 1) % 2]
        answer = write(writer, port)
        assert answer.status_code == 201
        fresh = poll(other, held)
        assert fresh.status_code == 200, f"replica {other.url} served a stale answer after port {port}"
        assert fresh.json()["version_info"] == answer.json()["version"]
        assert endpoints(fresh) == list(range(9001, port + 1))
        held = fresh.json()["version_info"]
        # Same state, same version, same bytes: Envoy never flips between replicas.
        assert [poll(replica, held).status_code for replica in replicas] == [304, 304]
        assert poll(writer).content == poll(other).content


def test_a_ttl_expiry_is_applied_once_across_replicas(eds_server, redis_url):
    replicas = [eds_server(store=redis_url, workers=2) for _ in range(2)]
    assert write(replicas[0], 9001, ttl=1).status_code == 201
    assert write(replicas[1], 9002).status_code == 201
    wait_until(lambda: endpoints(poll(replicas[1])) == [9002], timeout=10, what="the TTL host expired")
    # Four sweepers (two workers in each of two replicas) raced for it; one applied it.
    logs = "".join(replica.log_path.read_text() for replica in replicas)
    assert logs.count("expire service=web hosts=127.0.0.1:9001") == 1


def test_redis_away_polls_keep_their_answers_writes_503_then_everything_resumes(eds_server, redis_server):
    redis = redis_server()
    replicas = [eds_server(store=redis.url), eds_server(store=redis.url)]
    for port in (9001, 9002, 9003):
        assert write(replicas[port % 2], port).status_code == 201
    before = poll(replicas[0])
    version = before.json()["version_info"]

    redis.stop()
    for replica in replicas:
        # Each request on a fresh connection, so every worker is asked.
        for _ in range(4):
            assert poll(replica, version).status_code == 304
            again = poll(replica)
            assert again.status_code == 200 and again.content == before.content
        refused = write(replica, 9004)
        assert refused.status_code == 503
        assert "unavailable, nothing was changed" in refused.json()["message"]
        ready = requests.get(f"{replica.url}/readyz", timeout=5)
        assert ready.status_code == 503
        assert "discovery answers from the last state" in ready.json()["store"]
    assert "unreachable" in replicas[0].log_path.read_text()

    redis.start()
    wait_until(lambda: all(requests.get(f"{r.url}/readyz", timeout=5).ok for r in replicas), timeout=10, what="ready")
    assert write(replicas[1], 9004).status_code == 201
    assert endpoints(poll(replicas[0])) == [9001, 9002, 9003, 9004]
    assert "reachable again" in replicas[0].log_path.read_text()


def test_a_redis_crash_with_aof_keeps_every_host(eds_server, redis_server):
    redis = redis_server(appendfsync="always")
    replicas = [eds_server(store=redis.url), eds_server(store=redis.url)]
    for index, name in enumerate(("web", "api", "db")):
        hosts = [{"ip_address": f"10.0.{index}.{i}", "port": 8000 + i, "ttl": 3600} for i in range(1, 6)]
        assert requests.put(f"{replicas[index % 2].url}/edsservice/{name}", json={"hosts": hosts}, timeout=5).ok
    assert write(replicas[1], 9001).status_code == 201  # the last write, acknowledged just before the crash
    before = requests.get(f"{replicas[0].url}/edsservice", timeout=5).json()

    redis.crash()  # SIGKILL: only what was fsynced to the AOF survives
    redis.start()
    after = wait_until(
        lambda: (r := requests.get(f"{replicas[1].url}/edsservice", timeout=5)).ok and r.json(),
        timeout=10,
        what="the registry read back",
    )
    assert after == before
    assert sum(len(s["hosts"]) for s in after) == 16
