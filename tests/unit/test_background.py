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


def test_a_task_waits_while_told_to_and_no_longer_than_its_bound():
    ran, wake, busy = threading.Event(), threading.Event(), threading.Event()
    busy.set()
    task = Periodic("test-task", 3600, ran.set, wake=wake, waits_while=busy.is_set, waits_at_most=3600).start()
    try:
        wake.set()
        assert not ran.wait(0.5)  # woken, but waiting while busy
        busy.clear()
        assert ran.wait(5)
    finally:
        task.stop()
    ran.clear()
    bounded = Periodic("test-task", 3600, ran.set, wake=wake, waits_while=lambda: True, waits_at_most=0.2).start()
    try:
        wake.set()
        assert ran.wait(5)  # always busy: it runs once the bound has passed
    finally:
        bounded.stop()
