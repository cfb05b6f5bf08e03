"""Per-sample scores and aggregates (with bootstrap CIs) for one task's predictions."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from evalkit.metrics import get_metric
from evalkit.task import Prediction, Sample, TaskSpec

# The steps a spec's `postprocess` may name (the registry checks names against this table).
POSTPROCESS_STEPS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "first_line": lambda text: text.strip().split("\n")[0],
    "lower": str.lower,
}


def postprocess(output: str, steps: list[str]) -> str:
    """The answer extraction a spec asks for; eval_mm only strips (grounding keeps the raw text)."""
    for step in steps:
        if not isinstance(step, str) or step not in POSTPROCESS_STEPS:
            raise ValueError(f"unknown postprocess step {step!r} (known: {', '.join(POSTPROCESS_STEPS)})")
        output = POSTPROCESS_STEPS[step](output)
    return output


def score_task(spec: TaskSpec, samples: list[Sample], preds: list[Prediction], seed: int = 0) -> dict[str, Any]:
    """Fill `pred.scores` in place; return {"metrics": {name: {value, ci95, n}}, "info": {...}}."""
    from evalkit.metrics.stats import bootstrap_ci

    metrics: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {}
    for mspec in spec.metrics:
        result = get_metric(mspec.name)(preds, samples, **mspec.options)
        for pred, scores in zip(preds, result.per_sample):
            pred.scores.update(scores)
        for pred, metadata in zip(preds, result.per_sample_metadata):
            pred.metadata.update(metadata)
        for name, value in result.aggregate.items():
            entry: dict[str, Any] = {"value": _finite(value), "n": len(preds)}
            values = [s[name] for s in result.per_sample if name in s]
            if name in result.ci95:
                entry["ci95"] = [_finite(x) for x in result.ci95[name]]
            elif len(values) == len(preds) and values:
                entry["ci95"] = list(bootstrap_ci(values, seed=seed))
            metrics[name] = entry
        info.update(result.info)
    return {"metrics": metrics, "info": info}


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
