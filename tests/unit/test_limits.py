"""How many connections a worker takes within the open-files limit (serving/limits.py)."""

import resource

from eds_server.serving.limits import RESERVED_FILES, WORKER_CONNECTIONS, worker_connections


def test_a_limit_with_room_for_every_connection_says_nothing():
    assert worker_connections(WORKER_CONNECTIONS + RESERVED_FILES) == (WORKER_CONNECTIONS, None)
    assert worker_connections(524_288) == (WORKER_CONNECTIONS, None)
    assert worker_connections(resource.RLIM_INFINITY) == (WORKER_CONNECTIONS, None)


def test_a_smaller_limit_bounds_each_worker_and_says_what_to_raise():
    connections, warning = worker_connections(4096)
    assert connections == 4096 - RESERVED_FILES
    assert f"at most {connections} connections" in warning
    assert f"raise the hard limit to {WORKER_CONNECTIONS + RESERVED_FILES}" in warning
    assert "ulimit -Hn" in warning and "LimitNOFILE=" in warning
