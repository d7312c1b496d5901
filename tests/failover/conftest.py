from __future__ import annotations

import pytest

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
