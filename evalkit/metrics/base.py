"""How a task-level metric plugs into the runner.

A metric sees the whole list of predictions of a task at once, because some metrics are
corpus-level (CIDEr needs document frequencies over all references, BLEU is not an average
of per-sample scores). It returns per-sample scores (written to samples/<task>.jsonl, used
for paired comparisons) and aggregates (written to run.json). Where an aggregate is the mean
of a per-sample key of the same name, the runner attaches a bootstrap CI to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.task import Prediction


class MetricInputError(EvalkitError, ValueError):
    """References a metric cannot score honestly (e.g. one answer where VQA accuracy needs ten)."""


@dataclass
class MetricResult:
    per_sample: list[dict[str, float]]
    aggregate: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)  # counts and notes, e.g. {"unparseable": 3}
    # Intervals a corpus metric computes itself (BLEU from resampled n-gram totals); other
    # aggregates get the bootstrap of their per-sample key's mean from the runner.
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)


MetricFn = Callable[..., MetricResult]  # (predictions, samples, **options) -> MetricResult

_REGISTRY: dict[str, MetricFn] = {}


def register_metric(name: str) -> Callable[[MetricFn], MetricFn]:
    def wrap(fn: MetricFn) -> MetricFn:
        _REGISTRY[name] = fn
        return fn

    return wrap


def get_metric(name: str) -> MetricFn:
    import evalkit.metrics  # noqa: F401  (imports every metric module, filling the registry)

    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown metric {name!r}; known metrics: {known}")
    return _REGISTRY[name]


def metric_names() -> list[str]:
    import evalkit.metrics  # noqa: F401

    return sorted(_REGISTRY)


def mean_result(key: str, values: list[float], info: dict[str, Any] | None = None) -> MetricResult:
    """The common case: one per-sample score whose mean is the task score."""
    agg = sum(values) / len(values) if values else float("nan")
    return MetricResult([{key: v} for v in values], {key: agg}, info or {})


def answers_of(predictions: list[Prediction]) -> list[str]:
    """The parsed answer where the runner set one, else the raw output."""
    return [p.answer if isinstance(p.answer, str) else p.output for p in predictions]


__all__ = ["MetricInputError", "MetricResult", "register_metric", "get_metric", "metric_names", "mean_result", "answers_of"]
