"""Periodic work of a worker (serving/background.py)."""

from __future__ import annotations

import threading

from eds_server.serving.background import Periodic


def test_a_periodic_task_woken_early_runs_before_its_interval_and_stops_when_told():
    ran, wake = threading.Event(), threading.Event()
    task = Periodic("test-task", 3600, ran.set, wake=wake).start()
    try:
        assert not ran.wait(0.2)  # nothing before the interval, unless woken
        wake.set()
        assert ran.wait(5)  # an hour's interval: only the wake-up can have run it
    finally:
        task.stop()
    task._thread.join(5)
    assert not task._thread.is_alive()
