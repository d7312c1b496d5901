"""A poll sent after a write was acknowledged sees that write, whichever worker answers it.

Against the real `python -m eds_server` with two gunicorn workers on sqlite, where each worker answers
versions from memory until the shared generation moves (store/generation.py): writes go through a
connection served by one worker and the poll that follows through a connection served by the other,
as found in /proc, thousands of times, alternating.
"""

import http.client
import json
import time
from pathlib import Path

from scripts.processes import worker_pids

V3_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUNDS = 2000
PATIENCE = 120  # seconds: a loaded machine does fewer rounds, never a timed assertion
ESTABLISHED = "01"  # the state column of /proc/net/tcp


def server_side_inode(server_port: int, client_port: int) -> str:
    """The socket inode of the server's end of a loopback connection, from /proc/net/tcp.

    Only an established one: an earlier connection on the same pair of ports may linger in
    TIME_WAIT, with no socket (inode 0).
    """
    wanted = (f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}", ESTABLISHED)
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2], fields[3]) == wanted:
            return fields[9]
    raise LookupError(f"no server socket for client port {client_port}")


def worker_serving(connection: http.client.HTTPConnection, server_port: int, workers: list[int]) -> int:
    target = f"socket:[{server_side_inode(server_port, connection.sock.getsockname()[1])}]"
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if fd.readlink().name == target:
                    return pid
            except OSError:  # closed meanwhile
                continue
    raise LookupError("no worker holds the connection yet")


def one_per_worker(server, workers: list[int]) -> list[http.client.HTTPConnection]:
    """Two keep-alive connections, each served by another worker (whichever accepted it)."""
    found: dict[int, http.client.HTTPConnection] = {}
    others = []
    for _ in range(64):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", "/healthz")  # answered: the connection has its worker
        connection.getresponse().read()
        pid = worker_serving(connection, server.port, workers)
        if pid in found:
            others.append(connection)  # kept open meanwhile, so that the next one may go elsewhere
        else:
            found[pid] = connection
        if len(found) == 2:
            break
    for connection in others:
        connection.close()
    assert len(found) == 2, "every connection landed on one worker; the test would prove nothing"
    return list(found.values())


def send(connection, method: str, path: str, body: dict) -> tuple[int, dict | None]:
    connection.request(method, path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    answer = connection.getresponse()
    data = answer.read()
    return answer.status, json.loads(data) if data else None


def test_a_poll_on_the_other_worker_sees_the_write_just_acknowledged(eds_server):
    server = eds_server(workers=2)
    workers = worker_pids(server.process.pid)
    connections = one_per_worker(server, workers)
    status, written = send(connections[0], "PUT", "/edsservice/web", {"hosts": [{"ip_address": "10.0.0.1", "port": 1}]})
    assert status == 201
    poll = {"node": {"id": "envoy-1", "cluster": "edge"}, "resource_names": ["web"], "type_url": V3_TYPE}
    deadline = time.monotonic() + PATIENCE
    done = 0
    while done < ROUNDS and time.monotonic() < deadline:
        writer, poller = connections if done % 2 else connections[::-1]
        before = written["version"]
        port = 2 + done
        status, written = send(writer, "PUT", "/edsservice/web", {"hosts": [{"ip_address": "10.0.0.1", "port": port}]})
        assert status == 200 and written["version"] != before
        # Asking with the version before the write: a worker that missed it would answer 304.
        status, answer = send(poller, "POST", "/v3/discovery:endpoints", {**poll, "version_info": before})
        assert status == 200, f"round {done}: the other worker answered {status} to the version before the write"
        [assignment] = answer["resources"]
        assert answer["version_info"] == written["version"], f"round {done}"
        assert assignment["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
            "address": "10.0.0.1",
            "port_value": port,
        }
        done += 1
    # Each connection is still served by the worker it started on.
    assert sorted(worker_serving(c, server.port, workers) for c in connections) == sorted(workers)
    print(f"{done} writes, each followed by a poll on the other worker")
