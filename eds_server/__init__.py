"""eds-server: a REST-JSON Endpoint Discovery Service for Envoy."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:
    from .app import create_app
    from .settings import Settings, load_settings

__all__ = ["Settings", "__version__", "create_app", "load_settings"]

_LOADED_ON_FIRST_USE = {"create_app": ".app", "Settings": ".settings", "load_settings": ".settings"}


def __getattr__(name: str):
    # Not imported with the package: `eds-server` runs before Flask or PyYAML is imported, so a
    # dependency missing from the install is named in one line instead of a traceback.
    module = _LOADED_ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
