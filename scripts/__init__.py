"""Developer tools run from a checkout: `python -m scripts.demo` (make demo) and the process
harness it shares with the test suite (`scripts.processes`, `scripts.envoy`).

They live here rather than in `eds_server` because they drive files of the checkout
(`envoy/envoy-local.yaml`, `scripts/hello_upstream.py`) and the Envoy binary of the test
requirements, none of which an installed server has.
"""
