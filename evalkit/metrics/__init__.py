"""Metrics as the official tools compute them. Importing this package registers every metric."""

from evalkit.metrics import (  # noqa: F401  (registration)
    anls,
    caption,
    choice,
    exact,
    grounding,
    mmbench,
    mme,
    relaxed,
    seed_bench,
    stats,
    vqa,
)
from evalkit.metrics.base import MetricResult, get_metric, metric_names, register_metric

__all__ = ["MetricResult", "get_metric", "metric_names", "register_metric"]
