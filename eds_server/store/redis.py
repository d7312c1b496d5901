"""A registry shared by every replica: one Redis server, reached by URL.

Layout (every key under `eds:`):
  eds:service:NAME   hash {record: the service as JSON, version: its version}
  eds:names          sorted set of names, all scored 0, so it reads back in name order
  eds:deadlines      sorted set NAME -> the service's next TTL deadline

One key per service keeps the version beside its service (one HGET answers a
poll) and confines WATCH conflicts to writers of the same service. A write is
optimistic: WATCH the service, read it, run the registry's mutation (Python,
so not a Lua script), then MULTI/EXEC; when another writer committed in
between, EXEC fails and the step runs again on the new state. Nothing is ever
lost, and an expiry that two replicas race to apply is re-checked on the state
the winner left, so it happens once.

Every process using the store also keeps a mirror of the whole registry in
memory, followed by a thread subscribed to the changes every write publishes (in the same
MULTI/EXEC), and reloaded whole whenever that subscription is (re)made. Polls
still read their version from Redis (one HGET) while it answers, so a write on
any replica is served by every replica on its very next poll; the mirror is
what they answer from while Redis cannot be reached, and because every
worker of every replica follows the same stream of changes, they all answer
the same last state (Envoy does not flip between replicas). Everything else
(writes, listings, TTL sweeps, `ping`) raises StoreUnavailable then. A poll
tries Redis again each time while it refuses connections (that costs little,
and the first poll after it returns is fresh again); after a timeout the poll
path waits RETRY_AFTER_TIMEOUT before the next try, so a Redis that hangs
delays one poll per worker and second, not every poll.

The shared-memory generation that spares sqlite polls their read (store/generation.py)
cannot stand in for the HGET here: a write on another replica reaches this one's
follower after it was acknowledged, so only Redis can tell a poll that nothing changed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..model import Service
from .base import (
    Change,
    ClientRow,
    CommitOutcomeUnknown,
    Store,
    StoreUnavailable,
    dump_client,
    dump_service,
    load_client,
    load_service,
)

log = logging.getLogger("eds_server.store.redis")

PREFIX = "eds:"
NAMES = PREFIX + "names"
DEADLINES = PREFIX + "deadlines"
# The clients view: hash of JSON [node id, resource name] -> row, and when each row last polled.
CLIENTS = PREFIX + "clients"
CLIENTS_SEEN = PREFIX + "clients:seen"
# Pub/sub channels are not per database: the channel names the database.
CHANGES = PREFIX + "changes:{db}"
# Defaults a URL may override (`?socket_timeout=5`): short, because a poll
# waiting on a dead Redis is a poll Envoy times out on.
CONNECTION_DEFAULTS: dict[str, Any] = {"socket_connect_timeout": 0.5, "socket_timeout": 1.0}
RETRY_AFTER_TIMEOUT = 1.0
# How long the change follower waits before subscribing again after a failure.
RESUBSCRIBE_AFTER = 1.0
# How often the change follower checks whether it is asked to stop or to load everything again.
FOLLOWER_TICK = 1.0
# How long opening the store waits for the first load of the mirror.
FIRST_LOAD_PATIENCE = 5.0
# How long a write keeps retrying while other writers win the same service.
COMMIT_PATIENCE = 10.0

T = TypeVar("T")


def service_key(name: str) -> str:
    return f"{PREFIX}service:{name}"


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    credentials = f"{parts.username or ''}:***@" if parts.password else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{credentials}{parts.hostname or ''}{port}{parts.path}"


def check_url(url: str) -> None:
    """ValueError naming what is wrong with a redis:// or rediss:// URL (never echoing its password)."""
    shown = redacted_or_raw(url)
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  (urlsplit checks the port only when asked)
    except ValueError as error:
        raise ValueError(f"store URL {shown!r}: {error} (write redis://HOST:PORT/DB)") from None
    if not parts.hostname:
        raise ValueError(f"store URL {shown!r}: names no host (write redis://HOST:PORT/DB)")
    if parts.path not in ("", "/") and not parts.path[1:].isdigit():
        raise ValueError(f"store URL {shown!r}: the path must be a database number such as /0")
    try:
        pool = redis.ConnectionPool.from_url(url)
        # Builds (does not connect) a connection, which refuses options it does not know.
        pool.connection_class(**pool.connection_kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"store URL {shown!r}: {error}") from None


def redacted_or_raw(url: str) -> str:
    try:
        return redacted(url)
    except ValueError:  # an unparseable port: show only the scheme
        return f"{urlsplit(url).scheme}://..."


@dataclass(frozen=True)
class Outage:
    since: float  # wall clock, for people
    error: str
    retry_at: float  # monotonic


class RedisStore(Store):
    def __init__(self, url: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.where = redacted(url)
        # No retries inside redis-py: a retried EXEC could apply a write twice,
        # and the poll path has its own answer to an unreachable Redis.
        self._redis = redis.Redis.from_url(
            url, decode_responses=True, retry=Retry(NoBackoff(), 0), **CONNECTION_DEFAULTS
        )
        self._changes = CHANGES.format(db=self._redis.connection_pool.connection_kwargs.get("db", 0))
        self._outage: Outage | None = None
        self._outage_lock = threading.Lock()
        # name -> (record JSON, version): the registry as last followed; None until first loaded.
        # Only the follower thread writes it.
        self._mirror: dict[str, tuple[str, str]] | None = None
        self._resync = threading.Event()
        self._closed = threading.Event()
        self._follow_lock = threading.Lock()
        self._followed_in: int | None = None  # the process whose follower thread runs
        # Changes followed so far, and by the previous wait_for_change; the
        # condition is made with each follower, in the process that follows.
        self._generation = 0
        self._generation_seen = 0
        self._changed = threading.Condition()
        # The pipeline of the write step running in this thread, if any: count() reads through it.
        self._step = threading.local()
        self._follow_here()

    # -- reads -------------------------------------------------------------
    def version(self, name: str) -> str | None:
        return self._read_or_recall(lambda: self._redis.hget(service_key(name), "version"), name, 1)

    def get(self, name: str) -> Service | None:
        record = self._read_or_recall(lambda: self._redis.hget(service_key(name), "record"), name, 0)
        return None if record is None else load_service(record)

    def services(self) -> list[Service]:
        return [load_service(record) for record, _ in self._read(self._load_all).values()]

    def count(self) -> int:
        pipe = getattr(self._step, "pipe", None)
        if pipe is None:
            return self._read(lambda: self._redis.zcard(NAMES))
        # Inside a write step (the registry bounding the number of services): watch the
        # names too, so that a service created or deleted meanwhile runs the step again.
        try:
            pipe.watch(NAMES)
            return pipe.zcard(NAMES)
        except redis.RedisError as error:
            raise self._lost(error) from error

    def due_for_expiry(self, now: float) -> list[str]:
        return self._read(lambda: self._redis.zrangebyscore(DEADLINES, "-inf", now))

    def ping(self) -> None:
        self._read(self._redis.ping)

    def close(self) -> None:
        """Stop following and drop the connections; the next use opens them and follows again."""
        self._closed.set()  # the follower ends within FOLLOWER_TICK and releases its own connection
        self._redis.connection_pool.disconnect(inuse_connections=False)

    # -- writes ------------------------------------------------------------
    def _atomically(self, name: str, step: Callable) -> Change:
        self._follow_here()
        key = service_key(name)
        give_up_at = time.monotonic() + COMMIT_PATIENCE
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    record, version_before = pipe.hmget(key, "record", "version")
                except redis.RedisError as error:
                    raise self._lost(error) from error
                current = None if record is None else load_service(record)
                self._step.pipe = pipe
                try:
                    after, version_after = step(current)
                finally:
                    self._step.pipe = None
                if after is current:  # nothing to write (leaving `with` unwatches)
                    return Change(name, current, current, version_before, version_before)
                pipe.multi()
                self._queue_write(pipe, name, after, version_after)
                try:
                    pipe.execute()
                    break
                except redis.WatchError as error:
                    # redis-py reports a connection lost while keys are watched as a WatchError
                    # caused by it; the EXEC may have reached Redis before the connection broke.
                    lost = error.__context__
                    if isinstance(lost, (redis.ConnectionError, redis.TimeoutError)):
                        if self._landed(key, after, version_after, lost):
                            break
                    # Otherwise another writer changed the service first (or the EXEC never
                    # ran): run the step again on the current state.
                except redis.RedisError as error:
                    raise StoreUnavailable(f"{self.where} refused the write ({error})") from error
                if time.monotonic() > give_up_at:
                    raise StoreUnavailable(
                        f"{self.where}: service {name!r} kept changing under concurrent writers for "
                        f"{COMMIT_PATIENCE:.0f}s; nothing was changed, retry"
                    )
        self._reached()
        return Change(name, current, after, version_before, version_after)

    def _queue_write(self, pipe, name: str, after: Service | None, version: str | None) -> None:
        key = service_key(name)
        pipe.publish(self._changes, name)  # delivered at EXEC, only if the transaction runs
        if after is None:
            pipe.delete(key)
            pipe.zrem(NAMES, name)
            pipe.zrem(DEADLINES, name)
            return
        pipe.hset(key, mapping={"record": dump_service(after), "version": version})
        pipe.zadd(NAMES, {name: 0})
        if after.next_expiry is None:
            pipe.zrem(DEADLINES, name)
        else:
            pipe.zadd(DEADLINES, {name: after.next_expiry})

    # -- the mirror ------------------------------------------------------------
    def _follow_here(self) -> None:
        """Follow the changes from this process: once per process (gunicorn forks its workers from
        a master that used and closed the store, and threads do not cross a fork), again after close."""
        if self._followed_in == os.getpid() and not self._closed.is_set():
            return
        with self._follow_lock:
            if self._followed_in == os.getpid() and not self._closed.is_set():
                return
            self._closed, first_try_done = threading.Event(), threading.Event()
            self._changed = threading.Condition()
            self._followed_in = os.getpid()
            threading.Thread(
                target=self._follow, args=(self._closed, first_try_done), name="eds-redis-follower", daemon=True
            ).start()
        # Answering before the first load would leave a worker nothing to answer with in an outage.
        first_try_done.wait(FIRST_LOAD_PATIENCE)

    def _follow(self, closed: threading.Event, first_try_done: threading.Event) -> None:
        """Keep the mirror: subscribe, load everything, then re-read each service named by a change."""
        while not closed.is_set():
            try:
                with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(self._changes)
                    self._reached()
                    self._resync.clear()
                    # Subscribed before loading: a change made meanwhile is read again after.
                    self._mirror = self._load_all()
                    self._note_change()  # what changed while nobody followed is in that load
                    first_try_done.set()
                    while not closed.is_set() and not self._resync.is_set():
                        message = pubsub.get_message(timeout=FOLLOWER_TICK)
                        if message is not None and message["type"] == "message":
                            self._load_one(message["data"])
                            self._note_change()
            except redis.RedisError as error:
                if not closed.is_set():
                    self._lost(error)
            except Exception:  # a follower that died silently would leave the mirror behind for good
                log.exception("following redis changes failed; starting again")
            else:
                continue  # asked to load everything again
            first_try_done.set()
            closed.wait(RESUBSCRIBE_AFTER)

    def _note_change(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def wait_for_change(self, timeout: float) -> bool:
        """Woken by the follower, which hears every write of every replica on the changes channel."""
        self._follow_here()
        with self._changed:
            seen = self._generation_seen
            changed = self._changed.wait_for(lambda: self._generation != seen, timeout)
            self._generation_seen = self._generation
            return changed

    # -- the clients view ------------------------------------------------------
    def record_clients(self, rows: list[ClientRow], forget_before: float) -> None:
        fields = [json.dumps(row.key) for row in rows]
        give_up_at = time.monotonic() + COMMIT_PATIENCE
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(CLIENTS)
                    found = pipe.hmget(CLIENTS, fields) if fields else []
                    old = pipe.zrangebyscore(CLIENTS_SEEN, "-inf", f"({forget_before}")
                except redis.RedisError as error:
                    raise self._lost(error) from error
                merged = {
                    field: row.merged_into(None if text is None else load_client(text))
                    for field, row, text in zip(fields, rows, found, strict=True)
                }
                gone = [field for field in old if field not in merged]
                pipe.multi()
                if merged:
                    pipe.hset(CLIENTS, mapping={field: dump_client(row) for field, row in merged.items()})
                    pipe.zadd(CLIENTS_SEEN, {field: row.last_poll for field, row in merged.items()})
                if gone:
                    pipe.hdel(CLIENTS, *gone)
                    pipe.zrem(CLIENTS_SEEN, *gone)
                try:
                    pipe.execute()
                    return
                except redis.WatchError:
                    if time.monotonic() > give_up_at:
                        raise StoreUnavailable(f"{self.where}: the clients view kept changing; batch dropped") from None
                except redis.RedisError as error:
                    raise self._lost(error) from error

    def clients(self) -> list[ClientRow]:
        rows = self._read(lambda: self._redis.hgetall(CLIENTS))
        return [load_client(rows[field]) for field in sorted(rows, key=json.loads)]

    def _load_all(self) -> dict[str, tuple[str, str]]:
        """name -> (record, version) of every service, in name order (a service deleted meanwhile is left out)."""
        names = self._redis.zrange(NAMES, 0, -1)
        with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(service_key(name), "record", "version")
            entries = pipe.execute()
        return {
            name: (record, version)
            for name, (record, version) in zip(names, entries, strict=True)
            if record is not None
        }

    def _load_one(self, name: str) -> None:
        record, version = self._redis.hmget(service_key(name), "record", "version")
        if record is None:
            self._mirror.pop(name, None)
        else:
            self._mirror[name] = (record, version)

    def _landed(self, key: str, after: Service | None, version: str | None, error: redis.RedisError) -> bool:
        """After EXEC failed in flight: whether Redis applied it (True), or did not and the step may run again.

        Raises CommitOutcomeUnknown when that cannot be known: Redis cannot be
        asked, or the EXEC timed out (it may still be waiting in Redis's input).
        """
        try:
            record, stored_version = self._redis.hmget(key, "record", "version")
        except redis.RedisError:
            self._lost(error)
            raise self._outcome_unknown(error) from error
        if (record, stored_version) == ((None, None) if after is None else (dump_service(after), version)):
            return True
        if isinstance(error, redis.TimeoutError):
            raise self._outcome_unknown(error) from error
        return False

    def _outcome_unknown(self, error: redis.RedisError) -> CommitOutcomeUnknown:
        return CommitOutcomeUnknown(
            f"{self.where} stopped answering while committing ({error}); the change may have been "
            "applied: read the service before retrying"
        )

    # -- outages -------------------------------------------------------------
    def _read(self, read: Callable[[], T]) -> T:
        """A read that must be current: StoreUnavailable when Redis cannot answer."""
        self._follow_here()
        try:
            result = read()
        except redis.RedisError as error:
            raise self._lost(error) from error
        self._reached()
        return result

    def _read_or_recall(self, read: Callable[[], T], name: str, field: int) -> T:
        """A poll-path read: from Redis when it answers, else field `field` of the mirrored entry."""
        self._follow_here()
        outage = self._outage
        if outage is None or time.monotonic() >= outage.retry_at:
            try:
                return self._read(read)
            except StoreUnavailable:
                pass
        mirror = self._mirror
        if mirror is None:
            raise StoreUnavailable(self.unavailable_reason())
        entry = mirror.get(name)
        return None if entry is None else entry[field]

    def _lost(self, error: redis.RedisError) -> StoreUnavailable:
        with self._outage_lock:
            started = self._outage is None
            since = time.time() if started else self._outage.since
            pause = RETRY_AFTER_TIMEOUT if isinstance(error, redis.TimeoutError) else 0.0
            self._outage = Outage(since, f"{type(error).__name__}: {error}", time.monotonic() + pause)
        if started:
            log.warning("redis store %s unreachable (%s): %s; writes answer 503", self.where, error, self._fallback())
        return StoreUnavailable(self.unavailable_reason())

    def _reached(self) -> None:
        if self._outage is None:
            return
        with self._outage_lock:
            outage, self._outage = self._outage, None
        if outage is not None:
            log.warning("redis store %s reachable again after %.1fs", self.where, time.time() - outage.since)
            # Changes published while this worker could not hear them are only in Redis.
            self._resync.set()

    def unavailable_reason(self) -> str:
        outage = self._outage
        if outage is None:
            return f"{self.where} is reachable"
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(outage.since))
        return f"{self.where} unreachable since {since} ({outage.error}); {self._fallback()}"

    def _fallback(self) -> str:
        """What discovery does meanwhile, for people."""
        mirror = self._mirror
        if mirror is None:
            return "this process has not loaded the registry, so discovery has nothing to answer with"
        return f"discovery answers from the last state this process followed ({len(mirror)} services)"
