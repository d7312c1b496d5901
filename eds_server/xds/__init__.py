"""xDS: registry state rendered as Envoy's ClusterLoadAssignment, and the REST discovery protocol."""

from .discovery import Discovery, parse_request
from .render import TYPE_URLS, V2, V3, assignment, version_of

__all__ = ["TYPE_URLS", "V2", "V3", "Discovery", "assignment", "parse_request", "version_of"]
