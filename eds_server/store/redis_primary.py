"""Where a Redis store writes: one server named by its URL, or the primary that Redis Sentinel names.

  redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?OPTIONS]          one server; rediss:// for TLS
  redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/PRIMARY_NAME[/DB][?OPTIONS]
                                                                 Sentinels; rediss+sentinel:// for TLS

OPTIONS are redis-py's connection options (`ssl_ca_certs`, `socket_timeout`, ...). With Sentinel
they apply to the Sentinels and the servers alike, the password before `@` is the servers' (the
data password), and `sentinel_password` (with `sentinel_username` for an ACL user) is what the
Sentinels ask, when they ask anything. A Sentinel's port defaults to 26379.

Sentinel is redis-py's own (`Sentinel.master_for`): each new connection asks the Sentinels which
server is the primary, and a connection still open to a primary that was demoted is closed at its
first `READONLY` answer, so after a failover every connection finds the new primary by itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379
SENTINEL_OPTIONS = ("sentinel_password", "sentinel_username")
URL_FORMS = "redis://HOST:PORT/DB or redis+sentinel://HOST:PORT[,HOST:PORT...]/PRIMARY_NAME[/DB]"


class Primary(ABC):
    """The server that takes the store's writes, and what its absence means for people."""

    where: str  # the URL without its secrets, for messages and logs

    @abstractmethod
    def client(self, **defaults: Any) -> redis.Redis:
        """A client whose every connection goes to the primary; `defaults` apply unless the URL sets them."""

    @abstractmethod
    def replicas(self, client: redis.Redis) -> int:
        """How many replicas the primary has (the README's "has replicas"); RedisError when nobody can tell."""

    def moved(self, client: redis.Redis) -> bool:
        """Whether another server is the primary now than when `client`'s connections were made."""
        return False

    def describe(self, error: redis.RedisError) -> str:
        """What `error` says of the store, for people."""
        return f"{type(error).__name__}: {error}"

    def close(self) -> None:  # noqa: B027  (one server has no connections besides the client's)
        """Drop the connections this object holds besides the client's."""


class ServerPrimary(Primary):
    """One server: `redis://` or `rediss://`, through redis-py's own URL parsing."""

    def __init__(self, url: str):
        self.url = url
        self.where = redacted(url)

    def client(self, **defaults: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, **defaults)

    def replicas(self, client: redis.Redis) -> int:
        """The replicas connected to it now (ROLE): a lone server, or the replica of a managed Redis, has none."""
        role = client.execute_command("ROLE")
        return len(role[2]) if role[0] == "master" else 0


class SentinelPrimary(Primary):
    """The primary that Sentinel names for PRIMARY_NAME: `redis+sentinel://` or `rediss+sentinel://`."""

    def __init__(self, url: str):
        self.where = redacted_sentinel(url)
        parts = urlsplit(url)
        self.tls = parts.scheme == "rediss+sentinel"
        userinfo, _, hosts = parts.netloc.rpartition("@")
        self.sentinels = [self._address(host) for host in hosts.split(",")]
        path = [unquote(segment) for segment in parts.path.strip("/").split("/")]
        # A name of digits alone is a database number written where the primary's name belongs.
        if not path[0] or path[0].isdigit() or len(path) > 2 or len(path) == 2 and not path[1].isdigit():
            raise ValueError(
                f"store URL {self.where!r}: the path must be /PRIMARY_NAME or /PRIMARY_NAME/DB, "
                "PRIMARY_NAME as the Sentinels monitor it and DB a database number such as /0"
            )
        self.name = path[0]
        query = parse_qsl(parts.query, keep_blank_values=True)
        sentinel_auth = {key.removeprefix("sentinel_"): value for key, value in query if key in SENTINEL_OPTIONS}
        # The servers' options, read and checked by redis-py as for one server.
        credentials = f"{userinfo}@" if userinfo else ""
        database = path[1] if len(path) == 2 else "0"
        server_query = urlencode([(key, value) for key, value in query if key not in SENTINEL_OPTIONS])
        self.server_options = checked_options(
            f"{'rediss' if self.tls else 'redis'}://{credentials}sentinel/{database}?{server_query}", self.where
        )
        self.server_options.pop("host")
        self.server_options.pop("connection_class", None)
        # The Sentinels get the same socket and TLS options, not the servers' password.
        self.sentinel_options = {
            key: value for key, value in self.server_options.items() if key.startswith(("socket_", "ssl_"))
        }
        # No retries when a Sentinel does not answer: the next one is asked instead.
        self.sentinel_options.update(sentinel_auth, ssl=self.tls, decode_responses=True, retry=Retry(NoBackoff(), 0))
        self._sentinel: Sentinel | None = None

    def _address(self, host: str) -> tuple[str, int]:
        parts = urlsplit(f"//{host}")
        try:
            port = parts.port or SENTINEL_PORT
        except ValueError as error:
            raise ValueError(f"store URL {self.where!r}: Sentinel {host!r}: {error}") from None
        if not parts.hostname:
            raise ValueError(f"store URL {self.where!r}: names no Sentinel host (write {URL_FORMS})")
        return parts.hostname, port

    def client(self, **defaults: Any) -> redis.Redis:
        timeouts = {key: value for key, value in defaults.items() if key.startswith("socket_")}
        self._sentinel = Sentinel(self.sentinels, sentinel_kwargs={**timeouts, **self.sentinel_options})
        return self._sentinel.master_for(self.name, ssl=self.tls, **{**defaults, **self.server_options})

    def replicas(self, client: redis.Redis) -> int:
        """The replicas the Sentinels know of the primary, up or down: a replica that is down still
        counts, so that while it is away writes wait for it (and are refused) rather than go unreplicated."""
        errors = []
        for sentinel in self._sentinel.sentinels:
            try:
                return len(sentinel.sentinel_slaves(self.name))
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as error:
                errors.append(error)
        raise redis.ConnectionError(f"no Sentinel said which replicas {self.name!r} has ({errors[-1]})")

    def moved(self, client: redis.Redis) -> bool:
        """Asks the Sentinels; when they name another primary, redis-py closes the connections to the
        former one as they come back to the pool. A primary that was demoted without being stopped (a
        second failover, a network split) keeps its connections open and may still take writes, until
        Sentinel reconfigures it as a replica, which can take ten seconds."""
        pool = client.connection_pool
        known = pool.master_address
        try:
            named = pool.get_master_address()
        except redis.RedisError:  # no Sentinel names one now: the connections' own errors say the rest
            return False
        return known is not None and named != known

    def describe(self, error: redis.RedisError) -> str:
        if isinstance(error, redis.AuthenticationError) or not isinstance(
            error, (redis.ConnectionError, redis.TimeoutError)
        ):
            return super().describe(error)
        if isinstance(error, MasterNotFoundError):
            # redis-py's text: "No master found for NAME : SENTINEL - ERROR, ..." for the Sentinels that failed.
            silent = str(error).partition(" : ")[2].count(" - ")
            if silent >= len(self.sentinels):
                return (
                    f"no Sentinel answers ({', '.join(f'{host}:{port}' for host, port in self.sentinels)}): "
                    "check that they run, and their password (sentinel_password)"
                )
            return (
                f"no Sentinel names a primary {self.name!r} that is up ({silent} of {len(self.sentinels)} "
                "Sentinels did not answer): a failover is under way, and writes resume by themselves "
                "once Sentinel has promoted a replica"
            )
        return (
            f"{super().describe(error)}; the primary that Sentinel named for {self.name!r} does not answer: "
            "a failover is under way once Sentinel sees it down, and writes resume by themselves on the new primary"
        )

    def close(self) -> None:
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                sentinel.connection_pool.disconnect()


def primary_for(url: str) -> Primary:
    """The primary a store URL names (ValueError when the URL is wrong, never showing its passwords)."""
    if urlsplit(url).scheme in SENTINEL_SCHEMES:
        return SentinelPrimary(url)
    check_url(url)
    return ServerPrimary(url)


def check_url(url: str) -> None:
    """ValueError naming what is wrong with a Redis store URL (never echoing its passwords)."""
    if urlsplit(url).scheme in SENTINEL_SCHEMES:
        SentinelPrimary(url)
        return
    shown = redacted_or_raw(url)
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  (urlsplit checks the port only when asked)
    except ValueError as error:
        raise ValueError(f"store URL {shown!r}: {error} (write {URL_FORMS})") from None
    if not parts.hostname:
        raise ValueError(f"store URL {shown!r}: names no host (write {URL_FORMS})")
    if parts.path not in ("", "/") and not parts.path[1:].isdigit():
        raise ValueError(f"store URL {shown!r}: the path must be a database number such as /0")
    checked_options(url, shown)


def checked_options(url: str, shown: str) -> dict[str, Any]:
    """redis-py's connection options from a redis:// or rediss:// URL, refused when a connection would refuse them."""
    try:
        options = parse_url(url)
        connection_class = options.get("connection_class", redis.Connection)
        # Builds (does not connect) a connection, which refuses options it does not know.
        connection_class(**{key: value for key, value in options.items() if key != "connection_class"})
    except (TypeError, ValueError) as error:
        raise ValueError(f"store URL {shown!r}: {error}") from None
    return options


def redacted(url: str) -> str:
    """The URL without its password or options, for messages and logs."""
    if urlsplit(url).scheme in SENTINEL_SCHEMES:
        return redacted_sentinel(url)
    parts = urlsplit(url)
    credentials = f"{parts.username or ''}:***@" if parts.password else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{credentials}{parts.hostname or ''}{port}{parts.path}"


def redacted_sentinel(url: str) -> str:
    """A Sentinel URL without its passwords (the data password, and the query where `sentinel_password` is)."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username, colon, _ = userinfo.partition(":")
    credentials = f"{username}{':***' if colon else ''}{at}"
    return f"{parts.scheme}://{credentials}{hosts}{parts.path}"


def redacted_or_raw(url: str) -> str:
    try:
        return redacted(url)
    except ValueError:  # an unparseable port: show only the scheme
        return f"{urlsplit(url).scheme}://..."
