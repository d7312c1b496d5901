"""The Dockerfile installs and starts eds-server the way the tested paths do.

Its pip installs are requirements.txt, then the package with nothing more: test_make_run proves
that requirements.txt's pins are everything the package and its dependencies need (a venv with
them and the package holds nothing unpinned, and serves). The package is built from the files
test_wheel builds the wheel from, and started by the console script, as test_wheel starts it.
"""

from __future__ import annotations

import posixpath

from eds_server.settings import load_settings

from .dockerfile import arguments, command, copied, pip_installs
from .venvs import PACKAGE_SOURCES


def test_the_image_installs_requirements_txt_then_the_package_with_nothing_more():
    [workdir] = arguments("WORKDIR")
    placed = copied()
    installs = pip_installs()
    assert len(installs) == 2 and installs[0] == ["-r", "requirements.txt"], installs
    package_install = installs[1]
    assert placed[posixpath.join(workdir, "requirements.txt")] == "requirements.txt"

    assert len(package_install) == 2 and package_install[0] == "--no-deps", package_install
    build_directory = package_install[1]
    sources = {posixpath.relpath(path, build_directory): source for path, source in placed.items()
               if path.startswith(build_directory.rstrip("/") + "/")}  # fmt: skip
    assert sources == {name: name for name in PACKAGE_SOURCES}
    # Nothing of the package is copied where it would be imported instead of the installed one.
    in_workdir = [path for path in placed if path.startswith(workdir + "/")]
    assert not [path for path in in_workdir if placed[path].startswith("eds_server")]


def test_the_image_starts_the_console_script_with_settings_the_server_accepts():
    eds_server, *options = command()
    assert eds_server == "eds-server"
    settings = load_settings(options, environ={})
    assert (settings.host, settings.port, settings.store) == ("0.0.0.0", 8080, "sqlite:///data/registry.db")
