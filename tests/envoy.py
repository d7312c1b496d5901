"""The tests' Envoy and upstreams. They are shared with `make demo`, so they live in `scripts/envoy.py`."""

from scripts.envoy import EDS_CLUSTER, LOCAL_BOOTSTRAP, Envoy, Upstream, envoy_binary, local_bootstrap, start_envoy

__all__ = ["EDS_CLUSTER", "LOCAL_BOOTSTRAP", "Envoy", "Upstream", "envoy_binary", "local_bootstrap", "start_envoy"]
