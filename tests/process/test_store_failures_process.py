"""Store failures, made for real under a running `python -m eds_server` (2 workers): each write answers
503 with the reason while the failure lasts, /readyz says so, the server mends itself once the cause is
gone, and no answered write is lost (a restart shows exactly the writes that got a 2xx).

The SQLite file is made unwritable with chmod (chattr +i when running as root, whom chmod does not
stop), deleted, replaced, and its disk filled (a small tmpfs: needs the right to mount, else skipped).
Redis is stopped under the server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import requests

from scripts.processes import wait_until
from tests.helpers.listing import registry_listing

FRESH = {"Connection": "close"}  # each request on a new connection: spread over the workers


def add_host(server, port: int, service: str = "web") -> requests.Response:
    body = {"ip_address": "10.0.0.1", "port": port, "metadata": {"pad": "p" * 2000}}
    return requests.post(f"{server.url}/edsservice/{service}/hosts", json=body, headers=FRESH, timeout=10)


def ports(server, service: str = "web") -> list[int]:
    listing = {s["name"]: s for s in registry_listing(server.url)}
    return sorted(h["port"] for h in listing[service]["hosts"]) if service in listing else []


def ready(server) -> requests.Response:
    return requests.get(f"{server.url}/readyz", headers=FRESH, timeout=10)


def assert_refused_while_broken(server, reason: str, first_port: int, writes: int = 8) -> None:
    """Writes (landing on every worker) answer 503 naming `reason`, /readyz too, and nothing is written."""
    for port in range(first_port, first_port + writes):
        answer = add_host(server, port)
        assert answer.status_code == 503, answer.text
        assert reason in answer.json()["message"]
    readiness = ready(server)
    assert readiness.status_code == 503 and reason in readiness.json()["store"]


def assert_mended(server, port: int) -> None:
    """Once the cause is gone every worker writes again, by itself: several writes in a row succeed."""
    wait_until(lambda: ready(server).status_code == 200, 10, what="/readyz ready again")
    for offset in range(6):
        answer = add_host(server, port + offset)
        assert answer.status_code in (200, 201), answer.text


def no_tracebacks(server) -> None:
    assert "Traceback" not in server.log_path.read_text(errors="backslashreplace")


@contextlib.contextmanager
def unwritable(path: Path):
    """`path` unwritable by the server, undone on leaving: chmod, or chattr +i for root (chmod does not stop root)."""
    if os.geteuid() == 0:
        assert shutil.which("chattr"), "chattr (e2fsprogs) makes a file unwritable for root"
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(mode)


def copy_of(db: Path, copy: Path, then: str | None = None) -> Path:
    """A copy made with SQLite's backup, `then` run in it; closed, so that it is all in the one file."""
    with contextlib.closing(sqlite3.connect(db)) as source, contextlib.closing(sqlite3.connect(copy)) as target:
        source.backup(target)
        if then:
            target.execute(then)
            target.commit()
    return copy


def without_the_old_wal(db: Path) -> None:
    """As the README says to put a file in place: without the old file's WAL, which SQLite would replay into it."""
    for leftover in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        leftover.unlink(missing_ok=True)


@pytest.fixture
def sqlite_server(eds_server, tmp_path):
    server = eds_server(workers=2, store=f"sqlite:///{tmp_path}/data/registry.db")
    assert add_host(server, 1).status_code == 201
    return server, tmp_path / "data" / "registry.db"


def test_an_unwritable_file_is_503_with_the_reason_and_mends_itself(sqlite_server):
    server, db = sqlite_server
    with unwritable(db):
        assert_refused_while_broken(server, "not writable", 100)
        # Envoy is still answered: discovery only reads.
        poll = requests.post(f"{server.url}/v3/discovery:endpoints", json={"resource_names": ["web"]}, headers=FRESH)
        assert poll.status_code == 200
    assert_mended(server, 200)
    server.restart()
    assert ports(server) == [1, *range(200, 206)]
    no_tracebacks(server)


def test_a_deleted_file_is_noticed_and_a_restored_one_taken_up(sqlite_server, tmp_path):
    server, db = sqlite_server
    backup = copy_of(db, tmp_path / "backup.db")
    assert add_host(server, 2).status_code == 201  # after the backup: lost with the deleted file
    db.unlink()
    assert_refused_while_broken(server, "gone", 100)
    # Discovery too: no answer rather than one from a file nobody can see any more (Envoy keeps its endpoints).
    poll = requests.post(f"{server.url}/v3/discovery:endpoints", json={"resource_names": ["web"]}, headers=FRESH)
    assert poll.status_code == 503
    shutil.copy(backup, db)
    without_the_old_wal(db)
    assert_mended(server, 200)
    assert ports(server) == [1, *range(200, 206)]
    server.restart()
    assert ports(server) == [1, *range(200, 206)]
    with sqlite3.connect(db) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    no_tracebacks(server)


def test_a_file_replaced_under_the_server_is_the_one_served_and_written(sqlite_server, tmp_path):
    server, db = sqlite_server
    other = tmp_path / "other.db"
    copy_of(db, other, "DELETE FROM services")
    os.replace(other, db)
    without_the_old_wal(db)
    wait_until(lambda: ports(server) == [], 10, what="the replacing file served")
    assert_mended(server, 300)
    server.restart()
    assert ports(server) == list(range(300, 306))
    no_tracebacks(server)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs, unmounted at the end (the tests run as root, as CI does)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    assert done.returncode == 0, f"cannot mount a tmpfs to fill: {done.stderr.decode().strip()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"\0" * 65536)
    except OSError:  # ENOSPC: full; then what pages are left, a smaller write at a time
        with contextlib.suppress(OSError):
            while True:
                os.write(descriptor, b"\0" * 512)
    finally:
        os.close(descriptor)
    return filler


def test_a_full_disk_is_503_with_the_reason_and_mends_itself(eds_server, small_disk):
    server = eds_server(workers=2, store=f"sqlite:///{small_disk}/registry.db")
    assert add_host(server, 1).status_code == 201
    filler = fill(small_disk)
    assert_refused_while_broken(server, "disk is full", 100)
    filler.unlink()
    assert_mended(server, 200)
    server.restart()
    assert ports(server) == [1, *range(200, 206)]
    no_tracebacks(server)


def test_a_redis_outage_is_one_line_per_refused_write_not_a_traceback(eds_server, redis_server):
    redis = redis_server()
    server = eds_server(workers=2, store=redis.url)
    assert add_host(server, 1).status_code == 201
    logged_before = len(server.log_path.read_text().splitlines())
    redis.stop()
    writes = 20
    for port in range(100, 100 + writes):
        answer = add_host(server, port)
        assert answer.status_code == 503 and "unreachable" in answer.json()["message"]
    lines = server.log_path.read_text().splitlines()[logged_before:]
    no_tracebacks(server)
    # Per refused write: the access line and one warning; and once per worker, that Redis went away.
    assert len(lines) <= 2 * writes + 2 * server.workers + 2, "\n".join(lines)
    redis.start()
    assert_mended(server, 200)
