"""A registry shared by every replica: one Redis server, or the primary Sentinel names, reached by URL
(`redis_primary.py`).

Layout (every key under `eds:`):
  eds:service:NAME   hash {record: the service as JSON, version: its version}
  eds:names          sorted set of names, all scored 0, so it reads back in name order
  eds:deadlines      sorted set NAME -> the service's next TTL deadline
  eds:writes-refused sorted set, one member: the last moment a process saw a write refused

One key per service keeps the version beside its service (one HGET answers a
poll) and confines WATCH conflicts to writers of the same service. A write is
optimistic: WATCH the service, read it, run the registry's mutation (Python,
so not a Lua script), then MULTI/EXEC; when another writer committed in
between, EXEC fails and the step runs again on the new state. Nothing is ever
lost, and an expiry that two replicas race to apply is re-checked on the state
the winner left, so it happens once. When the primary has replicas, WAIT follows
EXEC on the same connection, and a write is acknowledged only once enough of
them hold it: a failover then keeps it.

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

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError

from ..model import Service
from .base import (
    Change,
    ClientRow,
    CommitOutcomeUnknown,
    Retention,
    Store,
    StoreUnavailable,
    beyond_retention,
    dump_client,
    dump_service,
    load_client,
    load_service,
)
from .redis_primary import primary_for

log = logging.getLogger("eds_server.store.redis")

PREFIX = "eds:"
NAMES = PREFIX + "names"
DEADLINES = PREFIX + "deadlines"
# The clients view: hash of JSON [node id, resource name] -> row, and when each row last polled.
CLIENTS = PREFIX + "clients"
CLIENTS_SEEN = PREFIX + "clients:seen"
# The last moment a process found a write refused (see `writes_refused_at`): a sorted set of one
# member, so that ZADD GT keeps the latest whichever process writes it.
WRITES_REFUSED = PREFIX + "writes-refused"
# Pub/sub channels are not per database: the channel names the database. A service's write
# publishes its name on the first; a batch of clients-view rows publishes on the second.
CHANGES = PREFIX + "changes:{db}"
CLIENT_CHANGES = PREFIX + "clients:changes:{db}"
# Defaults a URL may override (`?socket_timeout=5`): short, because a poll
# waiting on a dead Redis is a poll Envoy times out on.
CONNECTION_DEFAULTS: dict[str, Any] = {"socket_connect_timeout": 0.5, "socket_timeout": 1.0}
RETRY_AFTER_TIMEOUT = 1.0
# While no Sentinel names a primary that is up, a poll asks them again only after this pause:
# every try costs a question to each Sentinel.
RETRY_AFTER_NO_PRIMARY = 0.1
# How often a process tells the others, at most, that it saw writes refused.
SHARE_REFUSALS_EVERY = 0.5
# How long the change follower waits before subscribing again after a failure.
RESUBSCRIBE_AFTER = 1.0
# How often the change follower checks whether it is asked to stop or to load everything again.
FOLLOWER_TICK = 1.0
# How long opening the store waits for the first load of the mirror.
FIRST_LOAD_PATIENCE = 5.0
# How long a write keeps retrying while other writers win the same service.
COMMIT_PATIENCE = 10.0

T = TypeVar("T")
UNREAD = object()  # an answer not read yet


def _call(connection, *args: Any) -> Any:
    """One command on `connection`. One that broke is closed, so that no later answer is taken for another's."""
    try:
        connection.send_command(*args)
        return connection.read_response()
    except (redis.ConnectionError, redis.TimeoutError):
        connection.disconnect()
        raise


def service_key(name: str) -> str:
    return f"{PREFIX}service:{name}"


@dataclass(frozen=True)
class Outage:
    since: float  # wall clock, for people
    error: str
    retry_at: float  # monotonic


class RedisStore(Store):
    def __init__(self, url: str, *args, min_replicas: int | None = None, **kwargs):
        """`min_replicas`: how many replicas must hold a write before it is acknowledged; None: 1 when
        the primary has replicas, else 0 (found out each time the store connects to a primary)."""
        super().__init__(*args, **kwargs)
        self._primary = primary_for(url)
        self.where = self._primary.where
        # No retries inside redis-py: a retried EXEC could apply a write twice,
        # and the poll path has its own answer to an unreachable Redis.
        self._redis = self._primary.client(decode_responses=True, retry=Retry(NoBackoff(), 0), **CONNECTION_DEFAULTS)
        options = self._redis.connection_pool.connection_kwargs
        db = options.get("db", 0)
        self._changes, self._client_changes = CHANGES.format(db=db), CLIENT_CHANGES.format(db=db)
        self._min_replicas = min_replicas
        self._replicas_found: int | None = None  # what None in `min_replicas` stands for, once found
        # WAIT gives up well before the socket timeout would cut its connection.
        self._wait_ms = max(1, round(500 * options["socket_timeout"])) if options.get("socket_timeout") else 500
        self._refused_at: float | None = None  # when this process last saw a write refused (clock time)
        self._refusal_shared_at = 0.0  # monotonic
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

    def versions(self) -> dict[str, str]:
        return self._read(self._load_versions)

    def get(self, name: str) -> Service | None:
        record = self._read_or_recall(lambda: self._redis.hget(service_key(name), "record"), name, 0)
        return None if record is None else load_service(record)

    def services(self) -> list[Service]:
        return [load_service(record) for record, _ in self._read(self._load_all).values()]

    def count(self) -> int:
        connection = getattr(self._step, "connection", None)
        if connection is None:
            return self._read(lambda: self._redis.zcard(NAMES))
        # Inside a write step (the registry bounding the number of services): watch the
        # names too, so that a service created or deleted meanwhile runs the step again.
        try:
            _call(connection, "WATCH", NAMES)
            return _call(connection, "ZCARD", NAMES)
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
        self._primary.close()

    # -- writes ------------------------------------------------------------
    def _atomically(self, name: str, step: Callable) -> Change:
        self._follow_here()
        pool = self._redis.connection_pool
        try:
            replicas = self._replicas_to_confirm()
            # One connection for the whole step: WAIT counts the replicas that hold this connection's writes.
            connection = pool.get_connection()
        except redis.RedisError as error:
            raise self._lost(error) from error
        try:
            change = self._step_on(connection, name, step, replicas)
        except StoreUnavailable:
            self._note_refusal()
            raise
        finally:
            pool.release(connection)
        self._reached()
        return change

    def _step_on(self, connection, name: str, step: Callable, replicas: int) -> Change:
        key = service_key(name)
        give_up_at = time.monotonic() + COMMIT_PATIENCE
        watching = False
        try:
            while True:
                watching = True
                try:
                    _call(connection, "WATCH", key)
                    record, version_before = _call(connection, "HMGET", key, "record", "version")
                except redis.RedisError as error:
                    raise self._lost(error) from error
                current = None if record is None else load_service(record)
                self._step.connection = connection
                try:
                    after, version_after = step(current, version_before)
                finally:
                    self._step.connection = None
                if after is current:  # nothing to write
                    return Change(name, current, current, version_before, version_before)
                watching = False  # EXEC ends the WATCH, whether it runs the transaction or not
                if self._commit(connection, name, after, version_after, replicas):
                    return Change(name, current, after, version_before, version_after)
                # Another writer changed the service first (or the EXEC never reached
                # Redis): run the step again on the current state.
                if time.monotonic() > give_up_at:
                    raise StoreUnavailable(
                        f"{self.where}: service {name!r} kept changing under concurrent writers for "
                        f"{COMMIT_PATIENCE:.0f}s; nothing was changed, retry"
                    )
        finally:
            if watching and connection.is_connected:
                with contextlib.suppress(redis.RedisError):
                    _call(connection, "UNWATCH")

    def _commit(self, connection, name: str, after: Service | None, version: str | None, replicas: int) -> bool:
        """MULTI, the write, EXEC and, when `replicas` must confirm it, WAIT, in one round trip on the
        connection that WATCHes the service.

        True: applied (and held by `replicas` replicas). False: not applied, because another writer
        changed the service first or the connection broke before EXEC reached Redis: run the step again.
        """
        key = service_key(name)
        commands = self._write_commands(name, after, version)
        sent = [("MULTI",), *commands, ("EXEC",)]
        if replicas:
            sent.append(("WAIT", replicas, self._wait_ms))
        executed: Any = UNREAD  # EXEC's answer: None when a watched key changed, else each command's
        try:
            connection.send_packed_command(connection.pack_commands(sent))
            for _ in range(len(commands) + 1):
                connection.read_response()  # OK, then QUEUED for each command
            executed = connection.read_response()
            confirmed = connection.read_response() if replicas else 0
        except (redis.ConnectionError, redis.TimeoutError) as error:
            connection.disconnect()
            applied = self._landed(key, after, version, error) if executed is UNREAD else executed is not None
            if applied and replicas:
                raise self._unconfirmed(replicas, None) from error
            return applied
        except redis.ResponseError as error:
            connection.disconnect()  # the answers after an error answer are not read
            if executed is UNREAD:  # an error before EXEC makes Redis discard the transaction
                raise StoreUnavailable(f"{self.where} refused the write ({error})") from error
            raise self._outcome_unknown(error, "answered with an error") from error
        if executed is None:
            return False
        failed = next((answer for answer in executed if isinstance(answer, redis.RedisError)), None)
        if failed is not None:
            raise self._outcome_unknown(failed, "refused part of the write")
        if confirmed < replicas:
            raise self._unconfirmed(replicas, confirmed)
        return True

    def _replicas_to_confirm(self) -> int:
        if self._min_replicas is not None:
            return self._min_replicas
        if self._replicas_found is None:
            self._replicas_found = min(1, self._primary.replicas(self._redis))
        return self._replicas_found

    def _find_replicas(self) -> None:
        """Find out again whether the primary has replicas (the store has just connected to a primary)."""
        if self._min_replicas is None:
            try:
                self._replicas_found = min(1, self._primary.replicas(self._redis))
            except redis.RedisError:
                self._replicas_found = None  # the next write asks

    def _unconfirmed(self, replicas: int, confirmed: int | None) -> CommitOutcomeUnknown:
        held = "how many replicas hold it is not known" if confirmed is None else f"{confirmed} confirmed it"
        return CommitOutcomeUnknown(
            f"{self.where}: the change was applied on the primary, but of the {replicas} replica(s) that must "
            f"hold a write before it is acknowledged (redis_min_replicas), {held} within {self._wait_ms} ms: "
            "it may or may not survive a failover; read the service before retrying"
        )

    def _write_commands(self, name: str, after: Service | None, version: str | None) -> list[tuple]:
        key = service_key(name)
        # The change is published in the transaction: delivered at EXEC, only if the transaction runs.
        commands: list[tuple] = [("PUBLISH", self._changes, name)]
        if after is None:
            return [*commands, ("DEL", key), ("ZREM", NAMES, name), ("ZREM", DEADLINES, name)]
        commands += [("HSET", key, "record", dump_service(after), "version", version), ("ZADD", NAMES, 0, name)]
        if after.next_expiry is None:
            return [*commands, ("ZREM", DEADLINES, name)]
        return [*commands, ("ZADD", DEADLINES, after.next_expiry, name)]

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
                    pubsub.subscribe(self._changes, self._client_changes)
                    self._reached()
                    self._find_replicas()
                    self._resync.clear()
                    # Subscribed before loading: a change made meanwhile is read again after.
                    self._mirror = self._load_all()
                    self._note_change()  # what changed while nobody followed is in that load
                    first_try_done.set()
                    self._follow_messages(pubsub, closed)
            except redis.RedisError as error:
                if not closed.is_set():
                    self._lost(error)
            except Exception:  # a follower that died silently would leave the mirror behind for good
                log.exception("following redis changes failed; starting again")
            else:
                continue  # asked to load everything again
            first_try_done.set()
            closed.wait(RESUBSCRIBE_AFTER)

    def _follow_messages(self, pubsub, closed: threading.Event) -> None:
        """Re-read each service a message names (a batch of clients-view rows names none), until asked
        to stop or to load everything again, or until another server is the primary (its changes are
        published there)."""
        check_primary_at = time.monotonic() + FOLLOWER_TICK
        while not closed.is_set() and not self._resync.is_set():
            message = pubsub.get_message(timeout=FOLLOWER_TICK)
            if message is not None and message["type"] == "message":
                if message["channel"] == self._changes:
                    self._load_one(message["data"])
                self._note_change()
            if time.monotonic() >= check_primary_at:
                check_primary_at = time.monotonic() + FOLLOWER_TICK
                if self._primary.moved(self._redis):
                    log.warning("redis store %s: another server is the primary now; following it", self.where)
                    self._note_refusal()  # writes the former primary took may be lost
                    return

    def _note_change(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def wait_for_change(self, timeout: float) -> bool:
        """Woken by the follower, which hears every write (and clients-view batch) of every replica."""
        self._follow_here()
        with self._changed:
            seen = self._generation_seen
            changed = self._changed.wait_for(lambda: self._generation != seen, timeout)
            self._generation_seen = self._generation
            return changed

    # -- the clients view ------------------------------------------------------
    def record_clients(self, rows: list[ClientRow], retention: Retention) -> int:
        fields = [json.dumps(row.key) for row in rows]
        give_up_at = time.monotonic() + COMMIT_PATIENCE
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(CLIENTS)
                    found = pipe.hmget(CLIENTS, fields) if fields else []
                    old = pipe.zrangebyscore(CLIENTS_SEEN, "-inf", f"({retention.forget_before}")
                    added = None in found  # only a new row can take the view past a bound
                    seen = pipe.zrange(CLIENTS_SEEN, 0, -1, withscores=True) if added else []
                except redis.RedisError as error:
                    raise self._lost(error) from error
                merged = {
                    field: row.merged_into(None if text is None else load_client(text))
                    for field, row, text in zip(fields, rows, found, strict=True)
                }
                gone = [field for field in old if field not in merged]
                dropped = []
                if added:
                    last_polls = {field: last_poll for field, last_poll in seen if field not in gone}
                    last_polls.update({field: row.last_poll for field, row in merged.items()})
                    keys = [(tuple(json.loads(field)), last_poll) for field, last_poll in last_polls.items()]
                    dropped = [json.dumps(list(key)) for key in beyond_retention(keys, retention)]
                    merged = {field: row for field, row in merged.items() if field not in dropped}
                    gone += dropped
                pipe.multi()
                if merged:
                    pipe.hset(CLIENTS, mapping={field: dump_client(row) for field, row in merged.items()})
                    pipe.zadd(CLIENTS_SEEN, {field: row.last_poll for field, row in merged.items()})
                if gone:
                    pipe.hdel(CLIENTS, *gone)
                    pipe.zrem(CLIENTS_SEEN, *gone)
                pipe.publish(self._client_changes, "")  # wakes the propagation waits of every replica
                try:
                    pipe.execute()
                    return len(dropped)
                except redis.WatchError:
                    if time.monotonic() > give_up_at:
                        raise StoreUnavailable(f"{self.where}: the clients view kept changing; batch dropped") from None
                except redis.RedisError as error:
                    raise self._lost(error) from error

    def clients(self) -> list[ClientRow]:
        rows = self._read(lambda: self._redis.hgetall(CLIENTS))
        return [load_client(rows[field]) for field in sorted(rows, key=json.loads)]

    def _load_versions(self) -> dict[str, str]:
        return {name: version for name, (version,) in self._load_each("version").items()}

    def _load_all(self) -> dict[str, tuple[str, str]]:
        """name -> (record, version) of every service."""
        return self._load_each("record", "version")

    def _load_each(self, *fields: str) -> dict[str, tuple]:
        """name -> `fields` of every service, in name order (a service deleted meanwhile is left out)."""
        names = self._redis.zrange(NAMES, 0, -1)
        with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(service_key(name), *fields)
            entries = pipe.execute()
        return {name: tuple(values) for name, values in zip(names, entries, strict=True) if values[0] is not None}

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

    def _outcome_unknown(self, error: redis.RedisError, what: str = "stopped answering") -> CommitOutcomeUnknown:
        return CommitOutcomeUnknown(
            f"{self.where} {what} while committing ({self._primary.describe(error)}); the change may have been "
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
            pause = 0.0
            if isinstance(error, redis.TimeoutError):
                pause = RETRY_AFTER_TIMEOUT
            elif isinstance(error, MasterNotFoundError):
                pause = RETRY_AFTER_NO_PRIMARY
            described = self._primary.describe(error)
            self._outage = Outage(since, described, time.monotonic() + pause)
            self._refused_at = self.clock()
        if started:
            log.warning(
                "redis store %s unreachable (%s); writes answer 503; %s", self.where, described, self._fallback()
            )
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
            self._note_refusal(share_now=True)  # writes were refused until now

    def _note_refusal(self, share_now: bool = False) -> None:
        """Heartbeats may have been refused until now: no host expires within one ttl of it (see
        `Store.expire`), in any process on this Redis once it is shared (at most every
        SHARE_REFUSALS_EVERY seconds, and not while Redis is unreachable: the end of the outage is)."""
        self._refused_at = self.clock()
        recently = time.monotonic() - self._refusal_shared_at < SHARE_REFUSALS_EVERY
        if self._outage is not None or recently and not share_now:
            return
        self._refusal_shared_at = time.monotonic()
        with contextlib.suppress(redis.RedisError):  # this process's own sweeps know it anyway
            self._redis.zadd(WRITES_REFUSED, {"at": self._refused_at}, gt=True)

    def writes_refused_at(self) -> float | None:
        """The latest refusal any process on this Redis shared, or this one saw."""
        shared = self._read(lambda: self._redis.zscore(WRITES_REFUSED, "at"))
        known = [moment for moment in (shared, self._refused_at) if moment is not None]
        return max(known) if known else None

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
