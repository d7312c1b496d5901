"""What refuses a start before gunicorn runs: a worker class that does not import, a port that cannot be bound.

gunicorn finds both only once it runs, and reports them its own way: a worker
class that fails to import ends a traceback with "class uri invalid or not
found", and a port it cannot bind is retried five times over five seconds
before "Can't connect". grpc logs a failed bind in a line of its own before
the gRPC process can say anything. Checked here first, each is one line naming
the cause. gunicorn and grpc still bind their ports themselves: the probe
socket here is closed before they start, and a bound socket that never
listened leaves nothing behind (should another process take the port in that
moment, their own messages tell).
"""

from __future__ import annotations

import errno
import importlib
import socket

from ..settings import Settings
from .gunicorn_options import bind_address, gunicorn_options

BIND_ADVICE = {
    errno.EADDRINUSE: "another process listens there; stop it or choose another {flag}",
    errno.EACCES: "a port below 1024 needs root or CAP_NET_BIND_SERVICE; choose another {flag}",
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address; check --host",
}


class CannotStart(Exception):
    """A start refused before anything ran; the message names the cause."""


def check_can_start(settings: Settings) -> None:
    check_worker_class(gunicorn_options(settings)["worker_class"])
    check_port(settings.host, settings.port)
    if settings.grpc_port is not None:
        check_port(settings.host, settings.grpc_port, flag="--grpc-port", role="the gRPC port")


def check_worker_class(path: str) -> None:
    module, _, name = path.rpartition(".")
    try:
        getattr(importlib.import_module(module), name)
    except Exception as error:  # whatever breaks the import, gunicorn could not run a worker
        raise CannotStart(
            f"gunicorn worker class {path} does not import ({type(error).__name__}: {error}): "
            "a dependency is missing or broken; install requirements.txt (pip install -r requirements.txt)"
        ) from None


def check_port(host: str, port: int, flag: str = "--port", role: str | None = None) -> None:
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As gunicorn binds: a port a previous run left in TIME_WAIT is free to bind again.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((address, port))
    except OSError as error:
        advice = BIND_ADVICE.get(error.errno)
        cause = f"{error.strerror or error}" + (f" ({advice.format(flag=flag)})" if advice else "")
        where = bind_address(host, port) + (f" ({role})" if role else "")
        raise CannotStart(f"cannot listen on {where}: {cause}") from None
