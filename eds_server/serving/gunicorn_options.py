"""gunicorn settings for eds-server, and why each has the value it has.

`python -m eds_server` builds its gunicorn configuration from `gunicorn_options`,
so these are the production defaults; the command line and environment only
choose address, port, worker count and store.

Worker class: gevent (eds_server.serving.worker.EdsWorker, gunicorn's gevent worker
with a shutdown that suits Envoy). Long-poll holds every idle Envoy's poll for
up to long_poll_max_hold seconds: sync cannot hold a poll without blocking its
whole worker, and gthread holds one poll per thread, while under gevent a held
poll is one greenlet, a little memory and no CPU while nothing changes. gevent
answers polls about as fast as sync and faster than gthread, and one write
releases thousands of held polls at once (the figures, and how they were
measured: docs/PERFORMANCE.md#gunicorn-worker-class). Nothing on the poll path
blocks for long: a store read is microseconds, writes are short transactions.

Workers: 2 by default, one per core of the machine the figures come from; every
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
        # The proxies whose X-Forwarded-Proto (and friends) gunicorn believes: the same
        # ones whose X-Forwarded-For names a caller (api/common.py), none by default.
        "forwarded_allow_ips": ",".join(settings.trusted_proxies),
        "accesslog": "-" if settings.access_log else None,
        "access_log_format": ACCESS_FORMAT,
        "errorlog": "-",
        "loglevel": settings.log_level,
        "logger_class": logger_class(settings.log_format, settings.access_log_polls),
        "proc_name": "eds-server",
    }
