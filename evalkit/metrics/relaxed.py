"""ChartQA relaxed accuracy: numbers within 5%, anything else by case-insensitive exact match.

Source of the rule: google-research/pix2struct pix2struct/metrics.py @ 5b086ef5269a80d89fbdd37bdba263e492e83149,
``relaxed_correctness(target, prediction)``. A string is a number if Python's ``float()`` accepts it (so
surrounding spaces, "1e3", "1_000", "nan" are numbers and "1,000" or "$5" are not); a trailing "%" divides by
100 ("50%" == "0.5", "50" != "50%"). The numeric branch needs the *reference side* to be a non-zero number;
a zero or non-numeric reference falls back to ``a.lower() == b.lower()`` ("0" == "0", "0.0" != "0").
NaN and inf never match (the relative change is NaN).

``variant="pix2struct"``: the tolerance is relative to the target, ``|pred - target| / |target| <= 0.05``; the
prediction is not stripped; best over the targets (``aggregate_metrics`` takes the max). lmms-eval's chartqa
``relaxed_correctness(pred, doc["answer"])`` is this variant with a single target.

``variant="eval_mm"``: Qwen-VL's eval_mm/evaluate_vqa.py (@371c034) calls
``relaxed_correctness(elem['answer'].strip(), ann)`` -- prediction and target swapped -- so the tolerance is
relative to the *prediction* and the zero/non-numeric fallback looks at the prediction; the prediction is
stripped, a string annotation becomes a one-element list and the score is the max over the annotations. This
is what produced the paper's ChartQA numbers. Example: prediction 95 vs target 100 is correct for pix2struct
(5/100) and wrong for eval_mm (5/95); prediction 105.1 vs 100 is the other way round.
"""

from __future__ import annotations

from typing import Any

from evalkit.metrics.base import MetricResult, answers_of, register_metric
from evalkit.metrics.exact import reference_list
from evalkit.task import Prediction, Sample

VARIANTS: tuple[str, ...] = ("pix2struct", "eval_mm")


def _as_number(text: str) -> float | None:
    try:
        return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_match(reference: str, candidate: str, max_relative_change: float = 0.05) -> bool:
    """pix2struct's relaxed_correctness(target=reference, prediction=candidate): tolerance relative to reference."""
    ref_value = _as_number(reference)
    cand_value = _as_number(candidate)
    if cand_value is not None and ref_value:
        return abs(cand_value - ref_value) / abs(ref_value) <= max_relative_change
    return candidate.lower() == reference.lower()


def relaxed_accuracy(
    prediction: str, target: Any, variant: str = "pix2struct", max_relative_change: float = 0.05
) -> float:
    """1.0 if the prediction matches any target under the variant's rule (module docstring), else 0.0."""
    targets = reference_list(target)
    if variant == "pix2struct":
        hits = (relaxed_match(t, prediction, max_relative_change) for t in targets)
    elif variant == "eval_mm":
        answer = prediction.strip()
        hits = (relaxed_match(answer, t, max_relative_change) for t in targets)
    else:
        raise ValueError(f"unknown relaxed-accuracy variant {variant!r}; expected one of {VARIANTS}")
    return float(any(hits))


@register_metric("relaxed_accuracy")
def relaxed_accuracy_metric(
    predictions: list[Prediction],
    samples: list[Sample],
    variant: str = "pix2struct",
    max_relative_change: float = 0.05,
) -> MetricResult:
    """Task adapter: ``sample.references`` = target string or list; per-sample key ``relaxed_accuracy``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown relaxed-accuracy variant {variant!r}; expected one of {VARIANTS}")
    texts = answers_of(predictions)
    scores = [
        relaxed_accuracy(t or "", s.references, variant, max_relative_change)
        for t, s in zip(texts, samples, strict=True)
    ]
    agg = sum(scores) / len(scores) if scores else float("nan")
    numeric = sum(_as_number((t or "").strip()) is not None for t in texts)
    info = {"relaxed_accuracy": {"variant": variant, "n": len(scores), "numeric_predictions": numeric}}
    return MetricResult([{"relaxed_accuracy": v} for v in scores], {"relaxed_accuracy": agg}, info)
