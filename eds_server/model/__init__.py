"""The registry's domain: hosts, services and their rules. Pure Python, no I/O."""

from .errors import (
    AlreadyExists,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PreconditionFailed,
    Problem,
    RegistryError,
)
from .host import HEALTH_STATUSES, Host, format_endpoint, parse_endpoint, parse_host
from .service import NAME_PATTERN, Expected, Policy, Service, parse_service, validate_name

__all__ = [
    "HEALTH_STATUSES",
    "NAME_PATTERN",
    "AlreadyExists",
    "Expected",
    "Host",
    "InvalidInput",
    "LimitExceeded",
    "NotFound",
    "Policy",
    "PreconditionFailed",
    "Problem",
    "RegistryError",
    "Service",
    "format_endpoint",
    "parse_endpoint",
    "parse_host",
    "parse_service",
    "validate_name",
]
