"""The default store: one SQLite file, shared safely by every worker process of a host.

WAL lets polls read while a write commits; `BEGIN IMMEDIATE` takes the write
lock before reading, so two workers updating one service serialise instead of
losing an update; synchronous=FULL makes an acknowledged write survive a crash.

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
from contextlib import contextmanager

from ..model import Service
from .base import Change, ClientRow, Store, StoreUnavailable, dump_client, dump_service, load_client, load_service
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
"""
BUSY_TIMEOUT_SECONDS = 30
# How often a waiting watcher looks at the shared generation (a read of shared
# memory) per worker, for every held poll at once; a change reaches held polls within this.
CHANGE_CHECK_INTERVAL = 0.01
# Clients-view rows looked up per statement: two bound values each, well under SQLite's limit.
CLIENT_ROWS_PER_STATEMENT = 400


class SqliteStore(Store):
    def __init__(self, path: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        # A pool rather than one connection per thread: under gevent "threads"
        # are greenlets, and thousands of held polls must not each keep a
        # connection. A connection serves one step at a time; steps never
        # yield to another greenlet, so the pool stays as small as the number
        # of real threads that use the store at once. (list.pop and append
        # are atomic: the pool needs no lock.)
        self._idle: list[sqlite3.Connection] = []
        self.generation = SharedGeneration(path + "-generation")
        self._generation_bumped_in: int | None = None  # the process that bumped on connecting
        self._versions = CachedVersions(self.generation, self._stored_version)
        self._generation_seen: int | None = None  # by the previous wait_for_change
        with self._connection() as conn:
            conn.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as error:
            raise StoreUnavailable(f"cannot open sqlite store {self.path}: {error}") from error
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

    def _take(self) -> sqlite3.Connection:
        try:
            return self._idle.pop()
        except IndexError:
            return self._connect()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        conn = self._take()
        try:
            yield conn
        finally:
            self._idle.append(conn)

    def _fetch(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._connection() as conn:
            return conn.execute(sql, args).fetchall()

    def get(self, name: str) -> Service | None:
        rows = self._fetch("SELECT record FROM services WHERE name = ?", (name,))
        return load_service(rows[0][0]) if rows else None

    def services(self) -> list[Service]:
        return [load_service(row[0]) for row in self._fetch("SELECT record FROM services ORDER BY name")]

    def version(self, name: str) -> str | None:
        return self._versions.version(name)

    def _stored_version(self, name: str) -> str | None:
        conn = self._take()  # the poll path (after a write): no context manager
        try:
            row = conn.execute("SELECT version FROM services WHERE name = ?", (name,)).fetchone()
        finally:
            self._idle.append(conn)
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
        try:
            self._fetch("SELECT 1 FROM services LIMIT 1")
        except sqlite3.Error as error:
            raise StoreUnavailable(f"sqlite store {self.path}: {error}") from error

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
            time.sleep(min(CHANGE_CHECK_INTERVAL, left))

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

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
            after, version_after = step(current)
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

    def record_clients(self, rows: list[ClientRow], forget_before: float) -> None:
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
            conn.execute("DELETE FROM clients WHERE last_poll < ?", (forget_before,))

    def clients(self) -> list[ClientRow]:
        return [
            load_client(row[0]) for row in self._fetch("SELECT record FROM clients ORDER BY node_id, resource_name")
        ]
