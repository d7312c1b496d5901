"""A tiny upstream HTTP service that answers every GET with its own name.

The demo and the end-to-end tests use it in place of the tutorial's
containersol/hello-world containers: `python scripts/hello_upstream.py NAME PORT [HOST]`.
"""

from __future__ import annotations

import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(name: str, port: int, host: str = "127.0.0.1") -> None:
    body = f"{name}\n".encode()

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802  (the name http.server dispatches to)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    with Server((host, port), Hello) as server:
        server.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), *(sys.argv[3:4]))
