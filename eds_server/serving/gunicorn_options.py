"""gunicorn settings for eds-server, and why each has the value it has.

`python -m eds_server` builds its gunicorn configuration from `gunicorn_options`,
so these are the production defaults; the command line and environment only
choose address, port, worker count and store.

Worker class: gevent (eds_server.serving.worker.EdsWorker, gunicorn's gevent worker
with a shutdown that suits Envoy). Measured on the project machine (2 cores,
wrk on the same cores, the captured 77 KB Envoy poll, 2 workers, one run, the
machine shared): a bare WSGI app answered ~5,900 polls/s under gevent, ~6,600
under sync and ~3,500 under gthread (4 threads); on a quiet machine the bare
app under gevent reached 8,400-11,200/s and eds-server 7,000-9,000/s
up-to-date polls (docs/PERFORMANCE.md). sync cannot hold a poll without
blocking its whole worker, and gthread holds one poll per thread. Long-poll
holds every idle Envoy's poll for up to ~25 s: under gevent that is one
greenlet each (memory, idle CPU and the release of 10,000 held polls by one
write: docs/PERFORMANCE.md). Nothing on the poll path blocks for long: a
store read is microseconds, writes are short transactions.

Workers: 2 by default, one per core of the machine this was measured on; every
worker holds its own share of the Envoys' connections, as many as the
open-files limit allows (serving/limits.py).
"""

from __future__ import annotations

import ssl
from typing import Any

from ..settings import Settings
from .limits import WORKER_CONNECTIONS
from .logs import ACCESS_FORMAT, logger_class


def bind_address(host: str, port: int) -> str:
    # '::' binds an IPv6 socket that also accepts IPv4 (Linux bindv6only=0):
    # the tutorial's WSL2 users reach local services only at [::1].
    return f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"


def tls_options(settings: Settings) -> dict[str, Any]:
    """HTTPS for every route (discovery included) when a certificate is set; mutual TLS on request.

    gunicorn builds its SSL context per connection from these files, so renewed
    certificates are picked up by new connections without a restart; Envoy keeps
    its one connection open (keepalive below), so that costs one load per connection.
    """
    if not settings.certfile:
        return {}
    return {
        "certfile": settings.certfile,
        "keyfile": settings.keyfile,
        "ca_certs": settings.ca_certs,
        "cert_reqs": ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_NONE,
    }


def gunicorn_options(settings: Settings, worker_connections: int = WORKER_CONNECTIONS) -> dict[str, Any]:
    """`worker_connections`: what the open-files limit allows a worker (serving/limits.py)."""
    return {
        **tls_options(settings),
        "bind": [bind_address(settings.host, settings.port)],
        "workers": settings.workers,
        "worker_class": "eds_server.serving.worker.EdsWorker",
        # Each Envoy keeps one connection (and, long-polling, one held request)
        # per EDS cluster: connections, not CPU, bound a gevent worker.
        "worker_connections": worker_connections,
        # Envoy keeps one connection to its xDS cluster and reuses it for every
        # poll; closing it after 2 s (the default) would add a handshake to most polls.
        "keepalive": 75,
        # Seconds a worker may go without telling the master it is alive; the
        # gevent worker does so every second whatever its requests do.
        "timeout": 30,
        # On SIGTERM, answer what is in flight before exiting.
        "graceful_timeout": 10,
        # Several servers on one host (replicas, tests) must not fight over
        # gunicorn's default control socket path; nothing here uses it.
        "control_socket_disable": True,
        "accesslog": "-" if settings.access_log else None,
        "access_log_format": ACCESS_FORMAT,
        "errorlog": "-",
        "loglevel": settings.log_level,
        "logger_class": logger_class(settings.log_format, settings.access_log_polls),
        "proc_name": "eds-server",
    }
