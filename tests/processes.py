"""The tests' process harness. It is shared with `make demo`, so it lives in `scripts/processes.py`."""

from scripts.processes import REPO, VENV_BIN, EdsServer, free_port, start, stop, stop_all, survivors, wait_until

__all__ = ["REPO", "VENV_BIN", "EdsServer", "free_port", "start", "stop", "stop_all", "survivors", "wait_until"]
