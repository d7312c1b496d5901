"""Registry stores: one interface (`Store`), several backends chosen by URL."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from .base import Change, ClientRow, CommitOutcomeUnknown, Retention, Store, StoreUnavailable, VersionOf
from .memory import MemoryStore
from .redis import RedisStore
from .redis_primary import SENTINEL_SCHEMES, check_url
from .sqlite import SqliteStore

__all__ = [
    "Change",
    "ClientRow",
    "CommitOutcomeUnknown",
    "MemoryStore",
    "RedisStore",
    "Retention",
    "SqliteStore",
    "Store",
    "StoreUnavailable",
    "check_store_url",
    "open_store",
]

REDIS_SCHEMES = ("redis", "rediss", *SENTINEL_SCHEMES)


def check_store_url(url: str) -> str:
    """The URL's scheme, once it is known to name a store; ValueError says how to write it."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite" and not url.startswith("sqlite:///") or url == "sqlite:///":
        raise ValueError(f"store URL {url!r}: write sqlite:///relative.db or sqlite:////absolute/path.db")
    if scheme in REDIS_SCHEMES:
        check_url(url)
        return scheme
    if scheme not in ("sqlite", "memory"):
        raise ValueError(
            f"store URL {url!r}: unknown scheme {scheme!r} (use sqlite:///PATH, redis://HOST:PORT/DB, "
            "rediss://HOST:PORT/DB, redis+sentinel://HOST:PORT[,HOST:PORT...]/PRIMARY_NAME/DB or memory://)"
        )
    return scheme


def open_store(
    url: str, version_of: VersionOf, clock: Callable[[], float] | None = None, min_replicas: int | None = None
) -> Store:
    """`sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `redis[s]://[:PASSWORD@]HOST:PORT/DB`,
    `redis[s]+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/PRIMARY_NAME[/DB]` or `memory://`.

    `min_replicas` (Redis only): the replicas that must hold a write before it is acknowledged;
    None: 1 when the primary has replicas, else 0.
    """
    options = {} if clock is None else {"clock": clock}
    scheme = check_store_url(url)
    if scheme == "memory":
        return MemoryStore(version_of, **options)
    if scheme in REDIS_SCHEMES:
        return RedisStore(url, version_of, min_replicas=min_replicas, **options)
    return SqliteStore(url[len("sqlite:///") :], version_of, **options)
