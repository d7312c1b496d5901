"""Tests that fail on purpose while real processes run. Not collected by the suite (no test_ prefix):
test_cleanup.py runs them in a pytest of their own and checks that nothing they started survives.
"""

import os
import sys
import time

import pytest

from scripts.processes import start

PIDS = os.environ.get("SCENARIO_PIDS", os.devnull)


def record(*processes) -> None:
    with open(PIDS, "a") as pids:
        pids.writelines(f"{process.pid}\n" for process in processes)


def test_fails_with_server_envoy_and_upstream_running(server, envoy, upstreams):
    record(server.process, envoy.process, upstreams("alpha").process)
    pytest.fail("failing on purpose")


@pytest.mark.timeout(2)
def test_times_out_with_an_upstream_running(upstreams):
    record(upstreams("slow").process)
    time.sleep(30)


def test_fails_after_starting_a_process_no_fixture_stops(tmp_path):
    record(start([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "orphan.log"))
    raise RuntimeError("failing on purpose")
