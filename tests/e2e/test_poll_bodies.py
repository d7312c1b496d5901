"""What a real Envoy 1.40 sends poll after poll: the premise of `ParsedPerConnection`.

The server does not parse a body again when its connection sent the very same
bytes last. That only pays if Envoy, on its one keep-alive connection, re-sends
byte-identical bodies while nothing changes; this records them on the way.
"""

import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from scripts.processes import wait_until


class Recorder(ThreadingHTTPServer):
    """An HTTP/1.1 proxy in front of eds-server that keeps every poll body, per client connection."""

    daemon_threads = True
    tls = None  # what envoy_for asks of a server

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.bodies: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        self.statuses: list[int] = []
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def port(self) -> int:
        return self.server_address[1]


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (the name http.server looks up)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        recorder: Recorder = self.server
        recorder.bodies[self.client_address].append(body)
        answer = requests.post(recorder.upstream + self.path, data=body, timeout=5)
        recorder.statuses.append(answer.status_code)
        self.send_response(answer.status_code)
        if answer.status_code == 200:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args):
        pass


def test_envoy_re_sends_a_byte_identical_body_until_its_version_changes(eds_server, envoy_for, upstreams):
    server = eds_server()
    alpha, beta = upstreams("alpha"), upstreams("beta")
    requests.put(f"{server.url}/edsservice/myservice", json={"hosts": [alpha.host()]}, timeout=5).raise_for_status()
    recorder = Recorder(server.url)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    try:
        # request_timeout 1s: nothing is held, so Envoy polls every 0.1 s.
        envoy = envoy_for(recorder, refresh_delay="0.1s", request_timeout="1s")
        envoy.wait_for_ports([alpha.port])
        time.sleep(1)
        requests.put(f"{server.url}/edsservice/myservice", json={"hosts": [beta.host()]}, timeout=5).raise_for_status()
        envoy.wait_for_ports([beta.port])
        polls_so_far = len(recorder.statuses)
        wait_until(lambda: len(recorder.statuses) >= polls_so_far + 5, timeout=10, what="more polls after the write")
    finally:
        recorder.shutdown()
        recorder.server_close()

    [bodies] = recorder.bodies.values()  # one connection for every poll
    distinct = list(dict.fromkeys(bodies))
    # The first poll (no version yet), the one holding alpha's version, the one holding beta's.
    assert len(distinct) == 3, [len(b) for b in distinct]
    assert all(bodies.count(body) >= 5 for body in distinct[1:]), [bodies.count(body) for body in distinct]
    assert bodies == sorted(bodies, key=distinct.index), "a body came back after another one"
    assert recorder.statuses.count(304) >= 10
