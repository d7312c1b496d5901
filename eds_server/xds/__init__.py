"""xDS: registry state rendered as Envoy's ClusterLoadAssignment, and the discovery core every transport shares."""

from .core import Answer, DiscoveryCore
from .render import assignment, version_of
from .request import DiscoveryRequest, ParsedPerConnection, parse_request
from .resources import TYPE_URLS, V2, V3

__all__ = [
    "TYPE_URLS",
    "V2",
    "V3",
    "Answer",
    "DiscoveryCore",
    "DiscoveryRequest",
    "ParsedPerConnection",
    "assignment",
    "parse_request",
    "version_of",
]
