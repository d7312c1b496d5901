from __future__ import annotations

import pytest

from tests.e2e.conftest import envoy_for  # noqa: F401  (the e2e tests' Envoy factory, for these tests too)

from .cluster import SentinelCluster


@pytest.fixture
def sentinel_cluster(tmp_path):
    """A factory of Sentinel deployments (see SentinelCluster), every process stopped at the end of the test."""
    clusters: list[SentinelCluster] = []

    def make(**options) -> SentinelCluster:
        cluster = SentinelCluster(tmp_path, **options)
        clusters.append(cluster)
        return cluster.start()

    yield make
    for cluster in clusters:
        cluster.stop()
