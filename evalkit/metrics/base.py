"""How a task-level metric plugs into the runner.

A metric sees all of a task's predictions at once because some are corpus-level (CIDEr's document
frequencies, BLEU's summed n-gram counts). Per-sample scores feed paired comparisons; an aggregate
that is the mean of the per-sample key of its name gets the runner's bootstrap CI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    # What a scorer derived per sample that a reader needs beside the score (grounding: the two boxes
    # it compared), so that nobody re-derives it; merged into each Prediction's metadata.
    per_sample_metadata: list[dict[str, Any]] = field(default_factory=list)


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


def mean(values: Sequence[float]) -> float:
    """NaN for no values: an empty task has no score, not a score of 0."""
    return sum(values) / len(values) if values else float("nan")


def mean_result(key: str, values: list[float], info: dict[str, Any] | None = None,
                **more: list[float]) -> MetricResult:
    """Every metric whose task score is the mean of a per-sample score (``more``: further keys, one mean
    each), so the runner's bootstrap of those per-sample values is the score's CI."""
    columns = {key: values, **more}
    per_sample = [dict(zip(columns, row)) for row in zip(*columns.values(), strict=True)]
    return MetricResult(per_sample, {k: mean(v) for k, v in columns.items()}, info or {})


def check_option(kind: str, value: str, known: Sequence[str]) -> None:
    """A metric option from a task spec: a typo fails before any sample is scored, naming the choices."""
    if value not in known:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {known}")


def answer_text(prediction: Prediction) -> str:
    """The parsed answer where the runner set one, else the raw output."""
    return prediction.answer if isinstance(prediction.answer, str) else prediction.output


def answers_of(predictions: list[Prediction]) -> list[str]:
    return [answer_text(p) for p in predictions]


__all__ = ["MetricInputError", "MetricResult", "register_metric", "get_metric", "metric_names", "mean", "mean_result", "check_option", "answer_text", "answers_of"]
