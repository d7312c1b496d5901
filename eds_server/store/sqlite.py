"""The default store: one SQLite file, shared safely by every worker process of a host.

WAL lets polls read while a write commits; `BEGIN IMMEDIATE` takes the write
lock before reading, so two workers updating one service serialise instead of
losing an update; synchronous=FULL makes an acknowledged write survive a crash.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable

from ..model import Service
from .base import Change, Store, StoreUnavailable, dump_service, load_service

SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    name        TEXT PRIMARY KEY,
    record      TEXT NOT NULL,
    version     TEXT NOT NULL,
    next_expiry REAL
);
CREATE INDEX IF NOT EXISTS services_next_expiry ON services (next_expiry) WHERE next_expiry IS NOT NULL;
"""
BUSY_TIMEOUT_SECONDS = 30


class SqliteStore(Store):
    def __init__(self, path: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        # One connection per thread: sqlite3 connections must not be shared
        # across threads mid-transaction (gthread workers serve many at once).
        self._local = threading.local()
        with self._connection() as conn:
            conn.executescript(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as error:
                raise StoreUnavailable(f"cannot open sqlite store {self.path}: {error}") from error
            self._local.conn = conn
        return conn

    def get(self, name: str) -> Service | None:
        row = self._connection().execute("SELECT record FROM services WHERE name = ?", (name,)).fetchone()
        return load_service(row[0]) if row else None

    def services(self) -> list[Service]:
        rows = self._connection().execute("SELECT record FROM services ORDER BY name").fetchall()
        return [load_service(row[0]) for row in rows]

    def version(self, name: str) -> str | None:
        row = self._connection().execute("SELECT version FROM services WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def count(self) -> int:
        # The thread's own connection: inside `_atomically` this is the write transaction.
        return self._connection().execute("SELECT COUNT(*) FROM services").fetchone()[0]

    def due_for_expiry(self, now: float) -> list[str]:
        rows = (
            self._connection()
            .execute("SELECT name FROM services WHERE next_expiry IS NOT NULL AND next_expiry <= ?", (now,))
            .fetchall()
        )
        return [row[0] for row in rows]

    def ping(self) -> None:
        try:
            self._connection().execute("SELECT 1 FROM services LIMIT 1").fetchall()
        except sqlite3.Error as error:
            raise StoreUnavailable(f"sqlite store {self.path}: {error}") from error

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _atomically(self, name: str, step: Callable) -> Change:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT record, version FROM services WHERE name = ?", (name,)).fetchone()
            current = load_service(row[0]) if row else None
            version_before = row[1] if row else None
            after, version_after = step(current)
            if after is current:
                conn.execute("ROLLBACK")
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
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return Change(name, current, after, version_before, version_after)
