"""No process outlives the suite, even when tests fail or time out."""

import os
import subprocess
import sys

from scripts.processes import REPO, survivors


def test_failing_tests_leave_no_process_behind(tmp_path):
    pids = tmp_path / "pids"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'inner'}"]
        + ["tests/e2e/failing_scenario.py"],
        cwd=REPO,
        env={**os.environ, "SCENARIO_PIDS": str(pids)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = result.stdout + result.stderr
    assert "3 failed" in report and report.count("failing on purpose") >= 2 and "Timeout (>2.0s)" in report, report
    started = [int(pid) for pid in pids.read_text().split()]
    assert len(started) == 5, started  # eds-server, Envoy, two upstreams, the unowned process
    assert survivors(started) == []  # gunicorn's workers included: each PID leads its session
