"""Registry operations: what each write means and its limits, applied to a store; and the seed format."""

from .operations import Limits, Registry, describe
from .seed import check_services, export

__all__ = ["Limits", "Registry", "check_services", "describe", "export"]
