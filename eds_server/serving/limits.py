"""The process's open-file limit: each gRPC stream's connection, each held poll's, is a descriptor."""

from __future__ import annotations

import logging
import resource

# Below this many descriptors a server of thousands of Envoys runs out (the soft limit is often 1024).
WANTED_OPEN_FILES = 65536


def raise_open_files(log: logging.Logger, wanted: int = WANTED_OPEN_FILES) -> int:
    """Raise the soft RLIMIT_NOFILE to `wanted` (at most the hard limit); say so when it stays lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning("open files: cannot raise the limit from %s to %s: %s", soft, target, error)
    if soft < wanted:
        log.warning(
            "open files: at most %s (hard limit %s): fewer connections than %s can be served; "
            "raise it (ulimit -Hn, LimitNOFILE= in systemd, --ulimit nofile= in Docker)",
            soft,
            hard,
            wanted,
        )
    return soft
