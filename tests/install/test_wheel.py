"""`pip install` of the wheel built from the checkout, into a new empty venv, then `eds-server`.

The venv gets the wheel and what it declares (pyproject.toml's ranges, resolved by pip), nothing
from requirements.txt; the server is started by the console script from a directory outside
the checkout, so the package imported is the installed one, and its default store lands there.
"""

from __future__ import annotations

import zipfile

import pytest
import requests

from scripts.processes import REPO, free_port

from .answers import assert_serves_the_tutorial
from .venvs import Server, build_wheel, new_venv, pip, run

CONSOLE = REPO / "eds_server" / "static" / "console"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(the venv, the wheel installed in it, a directory outside the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    venv = new_venv(root / "venv")
    wheel = build_wheel(venv, root / "dist")
    pip(venv, "install", "--quiet", wheel)
    elsewhere = root / "run"
    elsewhere.mkdir()
    return venv, wheel, elsewhere


@pytest.fixture(scope="module")
def eds_server(built):
    venv, _, elsewhere = built
    port = free_port()
    command = [venv / "bin" / "eds-server", "--host", "127.0.0.1", "--port", port]
    server = Server(command, elsewhere / "eds-server.log", elsewhere, port)
    yield server
    server.stop()


def test_the_wheel_carries_the_console_files(built):
    _, wheel, _ = built
    shipped = {f"eds_server/{path.relative_to(REPO / 'eds_server')}" for path in CONSOLE.rglob("*") if path.is_file()}
    assert shipped and shipped <= set(zipfile.ZipFile(wheel).namelist())


def test_eds_server_version_is_the_version_of_the_package(built):
    venv, wheel, elsewhere = built
    metadata = run(
        [venv / "bin" / "python", "-c", "import importlib.metadata as m; print(m.version('eds-server'))"], cwd=elsewhere
    )
    version = metadata.stdout.strip()
    assert wheel.name.startswith(f"eds_server-{version}-")
    assert run([venv / "bin" / "eds-server", "--version"], cwd=elsewhere).stdout.strip() == f"eds-server {version}"


def test_the_installed_package_is_the_one_imported(built):
    venv, _, elsewhere = built
    where = run([venv / "bin" / "python", "-c", "import eds_server; print(eds_server.__file__)"], cwd=elsewhere)
    assert where.stdout.strip().startswith(str(venv / "lib"))


def test_eds_server_serves_the_tutorial_and_envoy_on_its_default_store(eds_server, built):
    assert_serves_the_tutorial(eds_server.url)
    _, _, elsewhere = built
    assert (elsewhere / "data" / "registry.db").is_file()  # the default store, relative to where it runs


def test_eds_server_serves_the_console_from_the_installed_files(eds_server):
    for name in ("index.html", "console.js"):
        served = requests.get(f"{eds_server.url}/ui/{'' if name == 'index.html' else name}", timeout=5)
        assert served.status_code == 200 and served.content == (CONSOLE / name).read_bytes(), name
