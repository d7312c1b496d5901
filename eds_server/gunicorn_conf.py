"""gunicorn settings for eds-server, and why each has the value it has.

`python -m eds_server` builds its gunicorn configuration from `gunicorn_options`,
so these are the production defaults; the command line and environment only
choose address, port, worker count and store.
"""

from __future__ import annotations

import ssl
from typing import Any

from .settings import Settings


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


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        **tls_options(settings),
        "bind": [bind_address(settings.host, settings.port)],
        "workers": settings.workers,
        # Threads let a worker answer polls while another request waits on the
        # store's write lock; every request is short.
        "worker_class": "gthread",
        "threads": 4,
        # Envoy keeps one connection to its xDS cluster and reuses it for every
        # poll; closing it after 2 s (the default) would add a handshake to most polls.
        "keepalive": 75,
        "timeout": 30,
        # On SIGTERM, answer what is in flight before exiting.
        "graceful_timeout": 10,
        # Several servers on one host (replicas, tests) must not fight over
        # gunicorn's default control socket path; nothing here uses it.
        "control_socket_disable": True,
        "accesslog": "-" if settings.access_log else None,
        "errorlog": "-",
        "loglevel": settings.log_level,
        "proc_name": "eds-server",
    }
