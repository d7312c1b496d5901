from __future__ import annotations

import pytest

from eds_server import Settings, create_app
from eds_server.store import open_store
from eds_server.xds import version_of
from scripts.processes import EdsServer, stop_all, survivors
from tests.helpers.captured import load_fixture
from tests.helpers.redis_server import RedisServer


@pytest.fixture(scope="session", autouse=True)
def _stop_every_process():
    yield
    stop_all()
    assert survivors() == [], "processes started by the tests are still running"


class Clock:
    """A clock the test moves by hand, for TTLs without sleeping."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory):
    """One redis-server for the tests that only need an empty database (see `redis_url`)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(shared_redis) -> str:
    """The shared redis-server's URL, its database emptied for this test."""
    shared_redis.client().flushdb()
    return shared_redis.url


@pytest.fixture
def redis_server(tmp_path):
    """A factory of redis-servers of this test's own (to stop, crash and restart), all stopped at the end."""
    servers: list[RedisServer] = []

    def make(**options) -> RedisServer:
        server = RedisServer(tmp_path, **options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path, clock):
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
    else:
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/registry.db"
    store = open_store(url, version_of, clock=clock)
    yield store
    store.close()


@pytest.fixture
def app(tmp_path, clock):
    store = open_store(f"sqlite:///{tmp_path}/registry.db", version_of, clock=clock)
    app = create_app(Settings(store="unused://"), store=store)
    yield app
    store.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def eds_server(tmp_path):
    """A factory of real eds-server processes, all stopped at the end of the test."""
    servers: list[EdsServer] = []

    def make(**options) -> EdsServer:
        options.setdefault("store", f"sqlite:///{tmp_path}/registry.db")
        server = EdsServer(tmp=tmp_path, **options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def envoy_poll() -> dict:
    """The poll Envoy 1.40 sent, headers and body exactly as captured."""
    return load_fixture("envoy-1.40-eds-poll-request.json")


@pytest.fixture
def envoy_first_poll() -> dict:
    return load_fixture("envoy-1.40-eds-first-request.json")
