"""The Dockerfile, read as its instructions: there is no Docker engine here to build it."""

from __future__ import annotations

import json
import posixpath
import shlex

from scripts.processes import REPO

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(KEYWORD, its arguments) for each instruction, continuation lines joined, comments left out."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def arguments(keyword: str) -> list[str]:
    return [rest for name, rest in instructions() if name == keyword]


def command() -> list[str]:
    """The CMD, in its exec (JSON) form."""
    [cmd] = arguments("CMD")
    return json.loads(cmd)


def pip_installs() -> list[list[str]]:
    """The arguments of every `pip install` the RUN instructions make, in order."""
    installs = []
    for run in arguments("RUN"):
        for step in run.split("&&"):
            words = shlex.split(step)
            if words[:2] == ["pip", "install"]:
                installs.append(words[2:])
    return installs


def copied() -> dict[str, str]:
    """Where the COPYs put each of their sources: absolute image path -> checkout path."""
    placed, workdir = {}, "/"
    for keyword, rest in instructions():
        if keyword == "WORKDIR":
            workdir = posixpath.join(workdir, rest)
        if keyword != "COPY":
            continue
        *sources, destination = rest.split()
        into_directory = destination.endswith("/") or destination == "." or len(sources) > 1
        destination = posixpath.normpath(posixpath.join(workdir, destination))
        for source in sources:
            placed[posixpath.join(destination, posixpath.basename(source)) if into_directory else destination] = source
    return placed
