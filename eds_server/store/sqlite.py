"""The default store: one SQLite file, shared safely by every worker process of a host.

WAL lets polls read while a write commits; `BEGIN IMMEDIATE` takes the write
lock before reading, so two workers updating one service serialise instead of
losing an update; synchronous=FULL makes an acknowledged write survive a crash.

When the file fails (made unwritable, its disk full, deleted or replaced while
the server runs), every operation raises StoreUnavailable naming why (a 503,
and /readyz says so), and the store mends itself once the cause is gone:

- any sqlite error drops every pooled connection, so none that went bad
  outlives it, and the next operation opens a fresh one; a connection opened
  while the file was unwritable (SQLite then opens it read-only, for good) is
  never used to write;
- a write first checks that the file is still the one it opened, writable, and
  its disk not full, and checks the file again after COMMIT: a write into a file
  that was deleted meanwhile would be lost at the next start, so it is never
  acknowledged (CommitOutcomeUnknown);
- reads notice a deleted or replaced file within IDENTITY_CHECK_INTERVAL;
- connections after the first never create the file: a new empty registry in
  place of a deleted one would hand Envoy no endpoints for every service.
Every write that changed a service bumps the shared generation beside the
database (store/generation.py) after its commit and before it returns, so a
poll reads a version from the database only when some write happened since
this process last read it; otherwise from memory. The same counter is what
wakes held polls.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from urllib.parse import quote

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
from .generation import CachedVersions, SharedGeneration

SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    name        TEXT PRIMARY KEY,
    record      TEXT NOT NULL,
    version     TEXT NOT NULL,
    next_expiry REAL
);
CREATE INDEX IF NOT EXISTS services_next_expiry ON services (next_expiry) WHERE next_expiry IS NOT NULL;
CREATE TABLE IF NOT EXISTS clients (
    node_id       TEXT NOT NULL,
    resource_name TEXT NOT NULL,
    last_poll     REAL NOT NULL,
    record        TEXT NOT NULL,
    PRIMARY KEY (node_id, resource_name)
);
CREATE INDEX IF NOT EXISTS clients_last_poll ON clients (last_poll);
"""
BUSY_TIMEOUT_SECONDS = 30
# A write waits for another connection's write lock in sleeps of its own, this long at first and
# at most: sqlite's busy handler sleeps inside C, where gevent cannot switch to another request,
# so a worker waiting there answered nothing, its polls included, while another worker wrote.
LOCK_WAIT_FIRST_SECONDS, LOCK_WAIT_LONGEST_SECONDS = 0.001, 0.02
# How often a waiting watcher looks at the shared generation (a read of shared
# memory) per worker, for every held poll at once; a change reaches held polls within this.
CHANGE_CHECK_INTERVAL = 0.01
# How often reads look whether the file is still the one opened (a stat).
IDENTITY_CHECK_INTERVAL = 1.0
# Writes are refused (and /readyz unready) with less free space than this on the file's disk.
MIN_FREE_BYTES = 1024 * 1024
# What sqlite's messages mean for the person reading the 503.
HINTS = {
    "readonly": "the database file (or its directory) is not writable by this process",
    "no such table": "the file holds no registry: was it replaced by another file?",
    "unable to open": "the database file is missing or its directory cannot be read",
}

Identity = tuple[int, int]  # (device, inode) of the file


def _begin_immediate(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting for the write lock in `time.sleep`s (which gevent turns into a switch)."""
    conn.execute("PRAGMA busy_timeout = 0")
    give_up_at = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause = LOCK_WAIT_FIRST_SECONDS
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() + pause > give_up_at:
                raise
        time.sleep(pause)
        pause = min(pause * 2, LOCK_WAIT_LONGEST_SECONDS)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_SECONDS * 1000}")


class _Connection(sqlite3.Connection):
    """A pooled connection, with the file it opened, whether it could write it then (SQLite opens a file
    it may not write read-only, and it stays so), and the pool generation it belongs to."""

    identity: Identity | None
    writable: bool
    pool_epoch: int


def _identity(path: str) -> Identity | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino)


# Clients-view rows looked up per statement: two bound values each, well under SQLite's limit.
CLIENT_ROWS_PER_STATEMENT = 400


class SqliteStore(Store):
    def __init__(self, path: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            reason = "a file of that name is in the way" if isinstance(error, FileExistsError) else error.strerror
            raise StoreUnavailable(
                f"cannot open sqlite store {path}: cannot create its directory {directory}: {reason}"
            ) from None
        # A pool rather than one connection per thread: under gevent "threads"
        # are greenlets, and thousands of held polls must not each keep a
        # connection. A connection serves one step at a time; steps never
        # yield to another greenlet, so the pool stays as small as the number
        # of real threads that use the store at once. (list.pop and append
        # are atomic: the pool needs no lock.)
        self._idle: list[_Connection] = []
        # Bumped when the file fails or is replaced: connections of an older
        # epoch are closed instead of going back to the pool.
        self._pool_epoch = 0
        self._identity: Identity | None = None
        self._identity_checked_at = 0.0
        self.generation = SharedGeneration(path + "-generation")
        self._generation_bumped_in: int | None = None  # the process that bumped on connecting
        self._versions = CachedVersions(self.generation, self._stored_version)
        self._generation_seen: int | None = None  # by the previous wait_for_change
        # A process with one watcher and no held polls to spare CPU for (the gRPC process) looks more often.
        self.change_check_interval = CHANGE_CHECK_INTERVAL
        conn = self._connect(create=True)
        try:
            conn.executescript(SCHEMA)
        except sqlite3.Error as error:
            conn.close()
            raise self._unavailable(error, opening=True) from error
        self._identity = conn.identity
        self._idle.append(conn)

    # -- connections -----------------------------------------------------------
    def _connect(self, create: bool = False) -> _Connection:
        # Only the store's first connection may create the file (see the module's docstring).
        target = self.path if create else f"file:{quote(os.path.abspath(self.path))}?mode=rw"
        try:
            conn = sqlite3.connect(
                target,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
                uri=not create,
                factory=_Connection,
            )
        except sqlite3.Error as error:
            raise self._unavailable(error, opening=True) from error
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as error:
            conn.close()
            raise self._unavailable(error, opening=True) from error
        conn.identity, conn.pool_epoch = _identity(self.path), self._pool_epoch
        conn.writable = os.access(self.path, os.W_OK)
        if self._generation_bumped_in != os.getpid():
            # A process (re)starting on this database, such as the replacement of a worker
            # killed between a commit and its bump, makes every process read versions again;
            # and a generation file that cannot be opened stops the store here, not after a commit.
            try:
                self.generation.bump()
            except OSError as error:
                conn.close()
                raise StoreUnavailable(
                    f"cannot open sqlite store {self.path}: {self.generation.path}: {error.strerror}"
                ) from error
            self._generation_bumped_in = os.getpid()
        return conn

    def _take(self, to_write: bool = False) -> _Connection:
        if time.monotonic() >= self._identity_checked_at + IDENTITY_CHECK_INTERVAL:
            self._follow_the_file()
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return self._connect()
            if conn.writable or not to_write:
                return conn
            conn.close()  # opened (by a read) while the file was not writable: read-only for good

    def _give_back(self, conn: _Connection) -> None:
        if conn.pool_epoch == self._pool_epoch:
            self._idle.append(conn)
        else:
            conn.close()

    def _drop_connections(self) -> None:
        """Every pooled connection is closed, and those in use are when they come back."""
        self._pool_epoch += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _follow_the_file(self) -> None:
        """Notice a database file deleted or replaced since it was opened: StoreUnavailable while there
        is none, and the connections to the old one dropped when another file takes its place."""
        self._identity_checked_at = time.monotonic()
        current = _identity(self.path)
        if current != self._identity:
            self._drop_connections()
            self._identity = current
            if current is not None:
                # Another file holds other versions: every process reads them again (the shared
                # generation would otherwise move only at the next write).
                with suppress(OSError):
                    self.generation.bump()
        if current is None:
            raise StoreUnavailable(
                f"sqlite store {self.path}: the database file is gone (deleted or moved while the server ran); "
                "put it back (or restore a copy); nothing is written meanwhile"
            )

    @contextmanager
    def _connection(self, to_write: bool = False) -> Iterator[_Connection]:
        conn = self._take(to_write)
        try:
            yield conn
        except sqlite3.Error as error:
            self._drop_connections()
            conn.close()
            raise self._unavailable(error) from error
        except BaseException:
            self._give_back(conn)
            raise
        self._give_back(conn)

    def _fetch(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._connection() as conn:
            return conn.execute(sql, args).fetchall()

    def _unavailable(self, error: sqlite3.Error, opening: bool = False) -> StoreUnavailable:
        text = str(error)
        hint = next((hint for words, hint in HINTS.items() if words in text), None)
        return StoreUnavailable(
            f"{'cannot open sqlite store' if opening else 'sqlite store'} {self.path}: {text}"
            f"{f' ({hint})' if hint else ''}"
        )

    def _writable_problem(self) -> str | None:
        """Why a write now would fail or be lost, or None: the file is the one opened, writable, with room."""
        self._follow_the_file()
        directory = os.path.dirname(os.path.abspath(self.path))
        for path in (self.path, self.path + "-wal", directory):
            if os.path.exists(path) and not os.access(path, os.W_OK):
                return f"{path} is not writable by this process (permissions, a read-only mount, chattr +i)"
        disk = os.statvfs(directory)
        free = (disk.f_bfree if os.geteuid() == 0 else disk.f_bavail) * disk.f_frsize
        if free < MIN_FREE_BYTES:
            return f"the disk is full: {free} bytes free where it is (less than {MIN_FREE_BYTES}); free some space"
        return None

    # -- reads ------------------------------------------------------------------
    def get(self, name: str) -> Service | None:
        rows = self._fetch("SELECT record FROM services WHERE name = ?", (name,))
        return load_service(rows[0][0]) if rows else None

    def services(self) -> list[Service]:
        return [load_service(row[0]) for row in self._fetch("SELECT record FROM services ORDER BY name")]

    def version(self, name: str) -> str | None:
        return self._versions.version(name)

    def versions(self) -> dict[str, str]:
        return dict(self._fetch("SELECT name, version FROM services"))

    def _stored_version(self, name: str) -> str | None:
        conn = self._take()  # the poll path (after a write): no context manager
        try:
            row = conn.execute("SELECT version FROM services WHERE name = ?", (name,)).fetchone()
        except sqlite3.Error as error:
            self._drop_connections()
            conn.close()
            raise self._unavailable(error) from error
        self._give_back(conn)
        return row[0] if row else None

    def count(self) -> int:
        # Inside `_atomically` the write transaction holds the write lock (BEGIN
        # IMMEDIATE), so the committed count any connection reads is the one the step sees.
        return self._fetch("SELECT COUNT(*) FROM services")[0][0]

    def size(self) -> tuple[int, int]:
        [(services, hosts)] = self._fetch(
            "SELECT count(*), coalesce(sum(json_array_length(record, '$.hosts')), 0) FROM services"
        )
        return services, hosts

    def due_for_expiry(self, now: float) -> list[str]:
        rows = self._fetch("SELECT name FROM services WHERE next_expiry IS NOT NULL AND next_expiry <= ?", (now,))
        return [row[0] for row in rows]

    def ping(self) -> None:
        """The registry can be read, and a write now would be made durable."""
        problem = self._writable_problem()
        if problem is not None:
            raise StoreUnavailable(f"sqlite store {self.path}: {problem}")
        self._fetch("SELECT 1 FROM services LIMIT 1")

    def wait_for_change(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            generation = self.generation.value()
            seen, self._generation_seen = self._generation_seen, generation
            if seen is not None and generation != seen:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.change_check_interval, left))

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        problem = self._writable_problem()
        if problem is not None:
            raise StoreUnavailable(f"sqlite store {self.path}: {problem}; nothing was changed")
        with self._connection(to_write=True) as conn:
            if conn.identity != self._identity:  # opened on a file that was replaced since
                raise StoreUnavailable(f"sqlite store {self.path}: the database file was replaced; retry")
            _begin_immediate(conn)
            try:
                yield conn
                if _identity(self.path) != conn.identity:  # deleted or replaced while the step ran
                    self._drop_connections()
                    raise StoreUnavailable(f"sqlite store {self.path}: the database file is gone; nothing was changed")
            except BaseException:
                with suppress(sqlite3.Error):  # sqlite may have rolled back itself (a full disk)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if _identity(self.path) != conn.identity:
                self._drop_connections()
                raise CommitOutcomeUnknown(
                    f"sqlite store {self.path}: the database file was deleted or replaced while this write "
                    "committed; it may be lost: read the service before retrying"
                )

    def _atomically(self, name: str, step: Callable) -> Change:
        change = self._commit(name, step)
        if change.before is not change.after:
            try:
                self.generation.bump()  # committed, and not yet acknowledged: see store/generation.py
            except OSError as error:
                raise StoreUnavailable(
                    f"the change to {name!r} was written, but the other workers could not be told "
                    f"({self.generation.path}: {error.strerror}); until the next write they may answer what "
                    "was there before: write it again"
                ) from error
        return change

    def _commit(self, name: str, step: Callable) -> Change:
        with self._transaction() as conn:
            row = conn.execute("SELECT record, version FROM services WHERE name = ?", (name,)).fetchone()
            current = load_service(row[0]) if row else None
            version_before = row[1] if row else None
            after, version_after = step(current, version_before)
            if after is current:
                return Change(name, current, current, version_before, version_before)
            if after is None:
                conn.execute("DELETE FROM services WHERE name = ?", (name,))
            else:
                conn.execute(
                    "INSERT INTO services (name, record, version, next_expiry) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET record = excluded.record, version = excluded.version, "
                    "next_expiry = excluded.next_expiry",
                    (name, dump_service(after), version_after, after.next_expiry),
                )
        return Change(name, current, after, version_before, version_after)

    def record_clients(self, rows: list[ClientRow], retention: Retention) -> int:
        dropped = self._record_clients(rows, retention)
        # What propagation waits wait for (wait_for_change's contract): a batch wakes them too. At most
        # one bump a second per worker, so polls still read their versions from memory nearly always.
        with suppress(OSError):  # the rows are recorded; a wait then sees them at its next wake-up
            self.generation.bump()
        return dropped

    def _record_clients(self, rows: list[ClientRow], retention: Retention) -> int:
        # A worker's batch holds a row per Envoy it answered in the last second: after one
        # write releases thousands of held polls, thousands. Read and written a chunk of rows
        # per statement, not one, so the batch costs the worker little more than its rows' JSON.
        with self._transaction() as conn:
            recorded = {}
            for start in range(0, len(rows), CLIENT_ROWS_PER_STATEMENT):
                chunk = rows[start : start + CLIENT_ROWS_PER_STATEMENT]
                keys = ",".join("(?, ?)" for _ in chunk)
                found = conn.execute(
                    f"SELECT node_id, resource_name, record FROM clients WHERE (node_id, resource_name) IN ({keys})",
                    [part for row in chunk for part in row.key],
                )
                recorded.update(((node_id, name), record) for node_id, name, record in found)
            merged = [row.merged_into(load_client(recorded[row.key]) if row.key in recorded else None) for row in rows]
            conn.executemany(
                "INSERT OR REPLACE INTO clients (node_id, resource_name, last_poll, record) VALUES (?, ?, ?, ?)",
                [(*row.key, row.last_poll, dump_client(row)) for row in merged],
            )
            conn.execute("DELETE FROM clients WHERE last_poll < ?", (retention.forget_before,))
            if all(row.key in recorded for row in rows):  # only a new row can take the view past a bound
                return 0
            seen = conn.execute("SELECT node_id, resource_name, last_poll FROM clients").fetchall()
            dropped = beyond_retention([((node, name), last_poll) for node, name, last_poll in seen], retention)
            conn.executemany("DELETE FROM clients WHERE node_id = ? AND resource_name = ?", dropped)
            return len(dropped)

    def clients(self) -> list[ClientRow]:
        return [
            load_client(row[0]) for row in self._fetch("SELECT record FROM clients ORDER BY node_id, resource_name")
        ]
