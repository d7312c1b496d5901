"""End-to-end fixtures: a real eds-server, a real Envoy polling it, real upstreams."""

from __future__ import annotations

import pytest

from ..envoy import Envoy, Upstream, start_envoy


@pytest.fixture
def upstreams(tmp_path):
    """A factory of named upstream processes, all stopped at the end of the test."""
    started: list[Upstream] = []

    def make(name: str) -> Upstream:
        upstream = Upstream(name, tmp_path).start()
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        upstream.stop()


@pytest.fixture
def envoy_for(tmp_path):
    """A factory of Envoys polling the given eds-servers; each must end with update_rejected at 0."""
    started: list[Envoy] = []

    def make(*servers, **options) -> Envoy:
        # Servers that serve TLS are polled over mutual TLS with their test certificates.
        options.setdefault("eds_tls", next((s.tls for s in servers if s.tls), None))
        envoy = start_envoy(tmp_path, [s.port for s in servers], **options)
        started.append(envoy)
        return envoy

    yield make
    try:
        for envoy in started:
            assert envoy.stat("update_rejected") == 0, "Envoy rejected an update from eds-server"
    finally:
        for envoy in started:
            envoy.stop()
