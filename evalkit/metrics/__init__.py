"""Metrics as the official tools compute them. Importing this package registers every metric."""

from evalkit.metrics import anls, choice, exact, grounding, relaxed, vqa  # noqa: F401  (registration side effects)
from evalkit.metrics.base import MetricResult, get_metric, metric_names, register_metric

__all__ = ["MetricResult", "get_metric", "metric_names", "register_metric"]
