"""SEED-Bench accuracy as Qwen-VL's eval_mm/seed_bench/eval.py scores it, per evaluation dimension.

eval.py (QwenLM/Qwen-VL @ 5c970678071cdc6e4110efeb5e89b1d7616ccd77) appends " A" .. " D" to the
prompt, averages each target's token cross-entropy and predicts the argmin: the choice with the best
mean log-probability, first on ties (`choice.pick_by_loglikelihood`, the same as ScienceQA). It
prints Acc@1 of one input file: image_input.jsonl (dimensions 1-9) and video_input_4.jsonl
(10-12) are two runs, here two tasks. `seed_accuracy` is that Acc@1; `seed/<dimension>` the
accuracy of each SEED-Bench evaluation dimension present (the leaderboard's columns).
"""

from __future__ import annotations

from collections import defaultdict

from evalkit.data.seed_bench import DIMENSIONS
from evalkit.metrics.base import MetricResult, register_metric
from evalkit.metrics.choice import choice_accuracy
from evalkit.task import Prediction, Sample


@register_metric("seed_accuracy")
def seed_accuracy(predictions: list[Prediction], samples: list[Sample]) -> MetricResult:
    """Task adapter: as `choice_accuracy`, plus `meta.question_type_id` (the dimension, 0 if unknown)."""
    base = choice_accuracy(predictions, samples)
    per_sample = [{"seed_accuracy": s["choice_accuracy"]} for s in base.per_sample]
    by_dim: dict[int, list[float]] = defaultdict(list)
    for score, sample in zip(per_sample, samples, strict=True):
        by_dim[int(sample.metadata.get("question_type_id") or 0)].append(score["seed_accuracy"])
    n = len(per_sample)
    aggregate = {"seed_accuracy": sum(s["seed_accuracy"] for s in per_sample) / n if n else float("nan")}
    for dim in sorted(by_dim):
        if dim in DIMENSIONS:
            values = by_dim[dim]
            aggregate[f"seed/{DIMENSIONS[dim]}"] = sum(values) / len(values)
    info = {"seed_accuracy": {**base.info["choice_accuracy"],
                              "per_dimension_n": {DIMENSIONS.get(d, "unknown"): len(v) for d, v in sorted(by_dim.items())}}}
    return MetricResult(per_sample, aggregate, info)
