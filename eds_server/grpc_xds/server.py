"""The grpc.aio server: its address (the REST server's host), its TLS, and its servicers."""

from __future__ import annotations

from pathlib import Path

import grpc

from ..settings import Settings
from . import servicers
from .streams import Hub

SERVER_OPTIONS = [
    # grpcio sets SO_REUSEPORT by default: a second server on a taken port would
    # start and silently share it. Off, binding a taken port fails.
    ("grpc.so_reuseport", 0),
    # Streams the asyncio loop has not taken up yet wait in grpc's queue. At its defaults
    # (1,000, then 3,000) grpc cancels the rest: a fleet of Envoys reconnecting together
    # after a restart would see many of its streams fail and come back only after Envoy's
    # backoff. Queued, a stream waits seconds at most; these bound the queue's memory.
    ("grpc.server.max_pending_requests", 10_000),
    ("grpc.server.max_pending_requests_hard_limit", 20_000),
]


class BindFailed(Exception):
    """The gRPC port cannot be listened on."""


def credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The certificate settings REST uses: TLS, and mutual TLS when client certificates are required."""
    if not settings.certfile:
        return None
    key = Path(settings.keyfile or settings.certfile).read_bytes()
    return grpc.ssl_server_credentials(
        [(key, Path(settings.certfile).read_bytes())],
        root_certificates=Path(settings.ca_certs).read_bytes() if settings.ca_certs else None,
        require_client_auth=settings.require_client_cert,
    )


async def start(settings: Settings, hub: Hub) -> grpc.aio.Server:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    servicers.add_to(server, hub)
    where, tls = settings.grpc_address, credentials(settings)
    try:
        if tls is None:
            server.add_insecure_port(where)
        else:
            server.add_secure_port(where, tls)
    except RuntimeError as error:
        raise BindFailed(
            f"gRPC port {where} cannot be listened on (in use, or not an address of this host): {error}"
        ) from None
    await server.start()
    return server
