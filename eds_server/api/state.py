"""The app's state: the parts `create_app` wires together, reached through one typed accessor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

from ..registry import Registry
from ..settings import Network, Settings
from ..telemetry import Metrics
from ..xds import DiscoveryCore

if TYPE_CHECKING:
    from .polls import PollRoutes

EXTENSION = "eds_server"


@dataclass
class AppState:
    settings: Settings
    registry: Registry
    core: DiscoveryCore
    metrics: Metrics
    trusted_proxies: tuple[Network, ...] = ()
    polls: PollRoutes | None = None

    def install(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self


def app_state(app: Flask | None = None) -> AppState:
    """The state of `app`, by default the app of the request being answered."""
    return (app or current_app).extensions[EXTENSION]
