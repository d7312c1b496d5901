from __future__ import annotations

import pytest

from eds_server.registry import Limits, Registry
from eds_server.store import open_store
from eds_server.xds import version_of


@pytest.fixture
def registry(tmp_path, clock):
    """A registry on a sqlite store that keeps the test's clock."""
    store = open_store(f"sqlite:///{tmp_path}/registry.db", version_of, clock=clock)
    yield Registry(store, Limits())
    store.close()
