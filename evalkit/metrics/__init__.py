"""Metrics as the official tools compute them. Importing this package registers every metric."""

from evalkit.metrics import anls, caption, choice, exact, grounding, relaxed, stats, vqa  # noqa: F401  (registration)
from evalkit.metrics.base import MetricResult, get_metric, metric_names, register_metric

__all__ = ["MetricResult", "get_metric", "metric_names", "register_metric"]
