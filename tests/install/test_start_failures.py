"""Starts that cannot work exit non-zero with one line naming the cause, before gunicorn runs.

Each through a real `python -m eds_server` process: a worker class that does not import (a new
venv with requirements.txt less `packaging`, the very failure of a fresh machine before
requirements.txt pinned it), a module the server imports missing (that venv less one more), a port
that cannot be bound, a store that cannot be opened.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.processes import REPO, free_port

from .venvs import ISOLATED, new_venv, pinned, pip

PREFIX = "eds-server: cannot start: "


def refused(*options: str, python: str | Path = sys.executable, without_capabilities: tuple[str, ...] = ()) -> str:
    """The one line a refused start writes; it must exit 1 and write nothing else."""
    command = [str(python), "-m", "eds_server", "--host", "127.0.0.1", *options]
    if without_capabilities:
        command = [*_dropping(without_capabilities), *command]
    result = subprocess.run(
        command, cwd=REPO, env={**os.environ, **ISOLATED}, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (1, ""), result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(PREFIX), line
    return line[len(PREFIX) :]


def _dropping(capabilities: tuple[str, ...]) -> list[str]:
    """A command prefix that runs without these capabilities (which root has, and a user has not)."""
    if os.geteuid() != 0:
        return []
    assert shutil.which("setpriv"), "setpriv (util-linux, see scripts/system-deps.sh) drops root's capabilities"
    return ["setpriv", "--bounding-set", ",".join(f"-{name}" for name in capabilities)]


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/registry.db"


@pytest.fixture(scope="module")
def venv_without_packaging(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("no-packaging")
    requirements = root / "requirements.txt"
    pins = {name: version for name, version in pinned().items() if name != "packaging"}
    requirements.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    venv = new_venv(root / "venv")
    pip(venv, "install", "--quiet", "-r", requirements)
    return venv


def test_a_worker_class_that_does_not_import(venv_without_packaging, store):
    cause = refused("--port", str(free_port()), "--store", store, python=venv_without_packaging / "bin" / "python")
    assert cause.startswith("gunicorn worker class eds_server.") and "EdsWorker does not import" in cause
    assert "No module named 'packaging'" in cause
    assert "requirements.txt" in cause


@pytest.mark.parametrize("module", ["flask", "simdjson"])
def test_a_module_missing_from_the_install(venv_without_packaging, tmp_path, module, store):
    """Imported when the server starts, not only by a worker: Python's traceback ended the start before."""
    venv = tmp_path / "venv"
    shutil.copytree(venv_without_packaging, venv, symlinks=True, copy_function=os.link)
    [installed] = (venv / "lib").glob(f"python*/site-packages/{module}")
    shutil.rmtree(installed)
    cause = refused("--port", str(free_port()), "--store", store, python=venv / "bin" / "python")
    assert cause.startswith(f"a dependency is missing (No module named '{module}')")
    assert "requirements.txt" in cause


def test_a_port_in_use(store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cause = refused("--port", str(port), "--store", store)
    assert cause.startswith(f"cannot listen on 127.0.0.1:{port}: Address already in use")
    assert "another --port" in cause


def test_a_privileged_port_without_the_right_to_bind_it(store):
    first_unprivileged = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    assert first_unprivileged > 80, f"ip_unprivileged_port_start is {first_unprivileged}: port 80 is open to all"
    cause = refused("--port", "80", "--store", store, without_capabilities=("net_bind_service",))
    assert cause.startswith("cannot listen on 127.0.0.1:80: Permission denied")
    assert "below 1024" in cause


@pytest.mark.parametrize(
    ("directory", "reason"), [("a-file", "a file of that name is in the way"), ("a-file/data", "Not a directory")]
)
def test_a_store_whose_directory_is_a_file(tmp_path, directory, reason):
    (tmp_path / "a-file").write_text("not a directory")
    cause = refused("--port", str(free_port()), "--store", f"sqlite:///{tmp_path}/{directory}/registry.db")
    assert cause == (
        f"cannot open sqlite store {tmp_path}/{directory}/registry.db: "
        f"cannot create its directory {tmp_path}/{directory}: {reason}"
    )


def test_a_store_whose_directory_cannot_be_created(tmp_path):
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    cause = refused(
        "--port", str(free_port()), "--store", f"sqlite:///{read_only}/data/registry.db",
        without_capabilities=("dac_override", "dac_read_search"),
    )  # fmt: skip
    assert cause.endswith(f"cannot create its directory {read_only}/data: Permission denied")


def test_a_store_file_that_is_not_a_database(tmp_path):
    (tmp_path / "registry.db").write_text("a text file, not SQLite\n" * 100)
    cause = refused("--port", str(free_port()), "--store", f"sqlite:///{tmp_path}/registry.db")
    assert cause == f"cannot open sqlite store {tmp_path}/registry.db: file is not a database"
