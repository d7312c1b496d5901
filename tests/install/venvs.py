"""New, empty venvs for the install tests, what is installed in them, and an eds-server started from one.

A venv here is made by `python3 -m venv` and holds only what the path under test puts there
(pip's cache may serve the downloads). Nothing of the development venv reaches it: the
processes started here get no PYTHONPATH, so a package missing from what a path installs
is missing for the server too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import requests

from scripts.processes import REPO, start, stop, wait_until

# Merged into the environment of every process started here (processes.start adds it to
# os.environ): the development tree must not be importable, and a `make` run by a test under
# `make test` must not inherit the outer make's flags.
ISOLATED = {"PYTHONPATH": "", "MAKEFLAGS": "", "MFLAGS": "", "MAKELEVEL": ""}
# What `python3 -m venv` itself puts in a venv, whatever a path installs.
VENV_OWN = {"pip", "setuptools"}
INSTALL_TIMEOUT = 150
# What building the package reads from the checkout (the Dockerfile copies the same for its build).
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "eds_server")


def run(args: list, cwd: Path = REPO, timeout: float = INSTALL_TIMEOUT, **env: str) -> subprocess.CompletedProcess:
    """Run to the end; a failure shows the command's own output."""
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env={**os.environ, **ISOLATED, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    command = " ".join(map(str, args))
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def new_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", path])
    return path


def pip(venv: Path, *args) -> subprocess.CompletedProcess:
    return run([venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check", *args])


def build_wheel(venv: Path, into: Path) -> Path:
    """The wheel of the checkout, built by the venv's pip from a copy of PACKAGE_SOURCES (a build
    writes beside its sources, and must not into the checkout)."""
    sources = into / "sources"
    sources.mkdir(parents=True)
    for name in PACKAGE_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, sources / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, sources / name)
    pip(venv, "wheel", "--quiet", "--no-deps", "--wheel-dir", into, sources)
    [wheel] = into.glob("*.whl")
    return wheel


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(venv: Path) -> dict[str, str]:
    """Every distribution in the venv, name -> version, less the venv's own pip and setuptools."""
    listing = json.loads(pip(venv, "list", "--format=json").stdout)
    return {normalised(d["name"]): d["version"] for d in listing if normalised(d["name"]) not in VENV_OWN}


def pinned(requirements: Path = REPO / "requirements.txt") -> dict[str, str]:
    pins = {}
    for line in requirements.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, separator, version = requirement.partition("==")
            assert separator and version, f"{requirements.name}: {requirement!r} is not pinned (NAME==VERSION)"
            pins[normalised(name.split("[", 1)[0])] = version.strip()
    return pins


class Server:
    """An eds-server process started by a path's own command; ready when /healthz answers, stopped by PID."""

    def __init__(self, args: list, log_path: Path, cwd: Path, port: int, **env: str):
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.process = start([str(arg) for arg in args], log_path, env={**ISOLATED, **env}, cwd=cwd)
        try:
            wait_until(lambda: self.process.poll() is not None or self._healthy(), timeout=60, what="/healthz")
            failure = None if self.process.poll() is None else f"exited {self.process.returncode}"
        except TimeoutError:
            failure = "did not answer /healthz within 60 s"
        if failure:
            self.stop()
            raise AssertionError(f"{' '.join(map(str, args))} {failure}; its log:\n{log_path.read_text()[-4000:]}")

    def _healthy(self) -> bool:
        return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200

    def stop(self) -> None:
        stop(self.process)
