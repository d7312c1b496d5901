"""A count of registry writes in memory shared by every process of a host: how a poll learns, without
asking the database, that nothing changed.

Reading one service's version from SQLite costs an up-to-date poll more than anything else eds-server
does for it (mostly the file-lock calls of a read transaction, docs/PERFORMANCE.md). Instead every
writer bumps one 8-byte counter, kept in a small file beside the database (`registry.db-generation`,
mapped into memory by every process that opens the store), after it commits and before its caller
acknowledges the write. A reader keeps the versions it read under the counter's value at the time
(`CachedVersions`) and asks the database again only once the counter moved.

Why a poll sent after a write was acknowledged sees that write, whichever worker answers it, race by race:

- The order is commit, bump, acknowledge. A poll sent after the acknowledgement reads the counter
  after the bump was stored (the memory page is the same for every process, and the acknowledgement
  and the poll each cross the kernel in between), so it finds a value that none of its cached
  versions were read under and reads the database, which holds the commit.
- Versions cached under value g were all read from the database after g was read, never before: each
  is at least as new as every write counted in g. A write committed but not yet bumped may show in
  them (newer is harmless) or not: that write is not acknowledged yet, and a poll concurrent with a
  write may see either side of it, as with any database.
- Writers in several processes: a bump is a read-modify-write under an exclusive `flock` of the file,
  opened for that bump (a `flock` belongs to an open file, and gunicorn workers would share one
  inherited from the master), and under a lock within the process for its threads: no bump is
  lost, and two writes always move the counter twice.
- Torn reads: the counter is one aligned 8-byte word, read and written whole through a memoryview of
  format "Q" (a single load or store on 64-bit CPUs, which is atomic for an aligned word on x86-64
  and arm64), so no reader sees half a bump.
- Wrap: 2**64 bumps; at a million writes a second, half a million years.
- A crash between commit and bump: that write was never acknowledged, but readers may keep answering
  the state before it until the next bump: the next write or TTL expiry, or the start of any process
  on this database (each bumps once when it first connects), so a worker killed mid-write has its
  replacement bump on its first use of the store.
- What does not bump: a program other than eds-server writing the database, and a generation file
  removed while servers run (processes that map it later would count in another file). Neither is
  supported, as with SQLite's own `-wal` and `-shm` files.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import threading
from collections.abc import Callable

WORD = 8  # bytes: one unsigned 64-bit counter at offset 0, the start of a page, so aligned
# Versions kept per worker and generation: a fleet asks for at most the registry's names, but polls
# for names nobody registered could otherwise grow it until the next write.
MAX_CACHED_VERSIONS = 65_536
_MISSING = object()


class SharedGeneration:
    """The counter in `path`, created at zero when missing; mapped on first use, shared across fork."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._word: memoryview | None = None

    def value(self) -> int:
        """The number of bumps so far: a read of shared memory, no system call."""
        word = self._word
        if word is None:
            word = self._open()
        return word[0]

    def bump(self) -> int:
        """Count one more write, atomically across processes; returns the new value.

        The file is opened for each bump (a write costs an fsync; this is nothing beside it), so
        the `flock` is always on an open file of this process's own, whoever forked it.
        """
        word = self._word if self._word is not None else self._open()
        with self._lock:
            fd = os.open(self.path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                word[0] = (word[0] + 1) & 0xFFFF_FFFF_FFFF_FFFF
                return word[0]
            finally:
                os.close(fd)  # which releases the flock

    def _open(self) -> memoryview:
        with self._lock:
            if self._word is None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    # Every process may create it; growing it to one word is idempotent (zeros).
                    if os.fstat(fd).st_size < WORD:
                        os.ftruncate(fd, WORD)
                    shared = mmap.mmap(fd, WORD, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                finally:
                    os.close(fd)  # the mapping stays
                self._word = memoryview(shared).cast("Q")
            return self._word


class CachedVersions:
    """Versions read through `read`, answered from memory while the shared generation stays put."""

    def __init__(self, generation: SharedGeneration, read: Callable[[str], str | None]):
        self.generation = generation
        self.read = read
        # (generation, {name: version or None}), replaced whole: a thread that read an older
        # generation writes into the dict of that generation, never into the current one.
        self._cached: tuple[int, dict[str, str | None]] = (-1, {})

    def version(self, name: str) -> str | None:
        now = self.generation.value()
        generation, versions = self._cached
        if generation != now:
            versions = {}
            self._cached = (now, versions)
        version = versions.get(name, _MISSING)
        if version is _MISSING:
            # Read after `now` was: at least as new as every write it counts.
            version = self.read(name)
            if len(versions) >= MAX_CACHED_VERSIONS:
                versions.clear()
            versions[name] = version
        return version
