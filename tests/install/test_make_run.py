"""`make run` on a fresh machine: the Makefile's own recipe into a new empty venv, started as `make run` starts it.

The Makefile is run itself (with VENV pointing into a temporary directory), so what is tested
is what a new user gets: a venv with requirements.txt and the package, and `python -m eds_server`
from the checkout. The settings come from the environment (EDS_*), as `make run` passes none.
"""

from __future__ import annotations

import pytest

from scripts.processes import REPO, free_port

from .answers import assert_serves_the_tutorial
from .venvs import Server, installed, pinned, run


@pytest.fixture(scope="module")
def make_venv(tmp_path_factory):
    venv = tmp_path_factory.mktemp("make-run") / "venv"
    run(["make", "--no-print-directory", "install", f"VENV={venv}"])
    return venv


@pytest.fixture(scope="module")
def make_run(make_venv):
    port = free_port()
    server = Server(
        ["make", "--no-print-directory", "run", f"VENV={make_venv}"],
        make_venv.parent / "make-run.log",
        cwd=REPO,
        port=port,
        EDS_HOST="127.0.0.1",
        EDS_PORT=str(port),
        EDS_STORE=f"sqlite:///{make_venv.parent}/registry.db",
    )
    yield server
    server.stop()


def test_make_run_installs_requirements_txt_and_the_package_only(make_venv):
    """Every package in the venv is pinned in requirements.txt, at its pin: nothing the package
    declares, or its dependencies bring, comes in unpinned; and every pin is installed."""
    found = installed(make_venv)
    assert found.pop("eds-server", None), "the package itself is not installed"
    expected = pinned()
    assert {name: found.get(name) for name in expected} == expected, "pinned but not installed at its pin"
    assert sorted(set(found) - set(expected)) == [], "installed but not pinned in requirements.txt"


def test_make_run_serves_the_tutorial_and_envoy(make_run):
    assert_serves_the_tutorial(make_run.url)
