"""The shared generation counter (store/generation.py): no bump lost across threads and processes, and the
versions it guards read again exactly when it moved."""

import multiprocessing
import threading

import pytest

from eds_server.store import StoreUnavailable, open_store
from eds_server.store.generation import MAX_CACHED_VERSIONS, CachedVersions, SharedGeneration
from eds_server.xds import version_of

BUMPS = 2000


def bump_from_threads(generation: SharedGeneration, threads: int = 2) -> None:
    workers = [threading.Thread(target=lambda: [generation.bump() for _ in range(BUMPS)]) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)


def bump_as_another_server(path: str) -> None:
    bump_from_threads(SharedGeneration(path))


def test_no_bump_is_lost_between_forked_workers_their_threads_and_other_processes(tmp_path):
    path = str(tmp_path / "registry.db-generation")
    generation = SharedGeneration(path)
    generation.bump()  # the master bumped before forking, as at start-up
    fork = multiprocessing.get_context("fork")
    # Forked workers inherit the master's object and mapping; another server maps the file itself.
    processes = [fork.Process(target=bump_from_threads, args=(generation,)) for _ in range(3)]
    processes.append(fork.Process(target=bump_as_another_server, args=(path,)))
    for process in processes:
        process.start()
    bump_from_threads(generation)
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert generation.value() == SharedGeneration(path).value() == 1 + 2 * BUMPS * 5


def test_the_counter_lives_in_the_file_and_starts_at_zero(tmp_path):
    path = str(tmp_path / "g")
    assert SharedGeneration(path).value() == 0
    SharedGeneration(path).bump()
    assert SharedGeneration(path).value() == 1
    assert (tmp_path / "g").stat().st_size == 8


def test_versions_are_read_again_exactly_when_the_generation_moved(tmp_path):
    generation = SharedGeneration(str(tmp_path / "g"))
    stored = {"web": "v1"}
    reads = []

    def read(name):
        reads.append(name)
        return stored.get(name)

    versions = CachedVersions(generation, read)
    assert [versions.version("web") for _ in range(3)] == ["v1"] * 3
    assert [versions.version("nobody") for _ in range(3)] == [None] * 3
    assert reads == ["web", "nobody"]
    stored["web"] = "v2"
    assert versions.version("web") == "v1"  # no bump: the write has not returned yet
    generation.bump()
    assert versions.version("web") == "v2" and versions.version("nobody") is None
    assert reads == ["web", "nobody", "web", "nobody"]


def test_names_nobody_registered_cannot_grow_the_cache_without_bound(tmp_path):
    versions = CachedVersions(SharedGeneration(str(tmp_path / "g")), lambda name: None)
    for index in range(MAX_CACHED_VERSIONS + 10):
        assert versions.version(f"name-{index}") is None
    assert len(versions._cached[1]) <= MAX_CACHED_VERSIONS


def test_a_generation_file_that_cannot_be_opened_stops_the_store_with_its_name(tmp_path):
    (tmp_path / "registry.db-generation").mkdir()
    with pytest.raises(StoreUnavailable, match="registry.db-generation"):
        open_store(f"sqlite:///{tmp_path}/registry.db", version_of)
