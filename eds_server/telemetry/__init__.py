"""What the server tells about itself: Prometheus metrics, added up across workers."""

from .metrics import CONTENT_TYPE, Metrics

__all__ = ["CONTENT_TYPE", "Metrics"]
