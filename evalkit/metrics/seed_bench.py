"""SEED-Bench accuracy as Qwen-VL's eval_mm/seed_bench/eval.py scores it, per evaluation dimension.

eval.py (QwenLM/Qwen-VL @ 5c970678071cdc6e4110efeb5e89b1d7616ccd77) picks by mean log-likelihood as
ScienceQA's script does, so this is `choice_accuracy` renamed, plus the leaderboard's per-dimension
columns `seed/<dimension>`. Its image and video inputs are two runs of the script, here two tasks.
"""

from __future__ import annotations

from collections import defaultdict

from evalkit.data.seed_bench import DIMENSIONS
from evalkit.metrics.base import MetricResult, mean, mean_result, register_metric
from evalkit.metrics.choice import choice_accuracy
from evalkit.task import Prediction, Sample


@register_metric("seed_accuracy")
def seed_accuracy(predictions: list[Prediction], samples: list[Sample]) -> MetricResult:
    """Task adapter: as `choice_accuracy`, plus `meta.question_type_id` (the dimension, 0 if unknown)."""
    base = choice_accuracy(predictions, samples)
    hits = [s["choice_accuracy"] for s in base.per_sample]
    by_dim: dict[int, list[float]] = defaultdict(list)
    for hit, sample in zip(hits, samples, strict=True):
        by_dim[int(sample.metadata.get("question_type_id") or 0)].append(hit)
    info = {"seed_accuracy": {**base.info["choice_accuracy"],
                              "per_dimension_n": {DIMENSIONS.get(d, "unknown"): len(v) for d, v in sorted(by_dim.items())}}}
    result = mean_result("seed_accuracy", hits, info)
    result.aggregate.update({f"seed/{DIMENSIONS[d]}": mean(by_dim[d]) for d in sorted(by_dim) if d in DIMENSIONS})
    return result
