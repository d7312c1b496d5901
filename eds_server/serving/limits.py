"""Open files: every Envoy keeps a connection open to the server (with long-poll, a poll held on it),
and each connection is a file descriptor of the worker that took it.

A default Linux session allows a process 1,024 open files (the soft limit) and lets it raise that
itself up to the hard limit (often 524,288; systemd units and containers set their own). The
server raises the soft limit to the hard one when it starts, and gives each gunicorn worker as
many connections as its descriptors allow, up to WORKER_CONNECTIONS; when the hard limit allows
fewer, it says so and what to raise.
"""

from __future__ import annotations

import resource

# Connections one worker takes at most: gevent holds each on a greenlet (~18 KB), so connections,
# not CPU, bound a worker; 10,000 held polls fit on two workers with room to spare.
WORKER_CONNECTIONS = 10_000
# Descriptors a worker needs besides its connections: listening sockets, logs, the store's files and
# connections, the metrics files, its control pipes.
RESERVED_FILES = 64
# What the soft limit goes to when the hard one is unlimited (Linux refuses more than fs.nr_open).
UNLIMITED_TARGET = 1_048_576


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (inherited by the workers); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # refused: keep what there is, and say what it allows
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def worker_connections(open_files: int) -> tuple[int, str | None]:
    """Connections per worker within `open_files` descriptors, and a warning when that is fewer than wanted."""
    if open_files == resource.RLIM_INFINITY or open_files - RESERVED_FILES >= WORKER_CONNECTIONS:
        return WORKER_CONNECTIONS, None
    connections = max(1, open_files - RESERVED_FILES)
    return connections, (
        f"open files: this process may open {open_files} (RLIMIT_NOFILE, already raised to its hard limit), so each "
        f"worker takes at most {connections} connections, one per Envoy polling it, instead of {WORKER_CONNECTIONS}; "
        f"raise the hard limit to {WORKER_CONNECTIONS + RESERVED_FILES} or more (`ulimit -Hn` in the starting shell, "
        "LimitNOFILE= in a systemd unit, `--ulimit nofile=` for docker run)"
    )
