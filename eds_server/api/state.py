"""The app's state: the parts `create_app` wires together, reached through one typed accessor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app

from ..registry import Registry
from ..settings import Network, Settings
from ..telemetry import Metrics
from ..xds import DiscoveryCore

EXTENSION = "eds_server"
# (API, WSGI environ) -> (status line, headers, body): one poll answered the way
# `PollRoutes.respond` answers it, for the routes Swagger documents.
AnswerPoll = Callable[[str, dict], tuple[str, list[tuple[str, str]], bytes]]


@dataclass
class AppState:
    settings: Settings
    registry: Registry
    core: DiscoveryCore
    metrics: Metrics
    trusted_proxies: tuple[Network, ...] = ()
    answer_poll: AnswerPoll | None = None
    # Parts of the server outside this process (the gRPC process) that died: {part: why}.
    parts_down: Callable[[], dict[str, str]] = field(default=dict)

    def install(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self


def app_state(app: Flask | None = None) -> AppState:
    """The state of `app`, by default the app of the request being answered."""
    return (app or current_app).extensions[EXTENSION]
