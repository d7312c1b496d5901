"""eds-server: a REST-JSON Endpoint Discovery Service for Envoy."""

from ._version import __version__
from .app import create_app
from .settings import Settings, load_settings

__all__ = ["Settings", "__version__", "create_app", "load_settings"]
