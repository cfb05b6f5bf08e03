"""ChartQA relaxed accuracy: numbers within 5%, anything else by case-insensitive exact match.

Source of the rule: google-research/pix2struct pix2struct/metrics.py @ 5b086ef5269a80d89fbdd37bdba263e492e83149,
``relaxed_correctness(target, prediction)``; "a number" is whatever Python's ``float()`` accepts (after a
trailing "%" becomes /100), so "1e3" is one and "1,000" is not. Two variants, because Qwen-VL's call differs:

- ``pix2struct``: tolerance relative to the target, best over the targets (lmms-eval's chartqa with one target).
- ``eval_mm``: Qwen-VL's eval_mm/evaluate_vqa.py (@371c034) calls ``relaxed_correctness(elem['answer'].strip(),
  ann)`` with prediction and target swapped, so the tolerance is relative to the prediction: 95 vs 100 is
  right for pix2struct (5/100) and wrong here (5/95). This produced the paper's ChartQA numbers.
"""

from __future__ import annotations

from typing import Any

from evalkit.metrics.base import MetricResult, answers_of, check_option, mean_result, register_metric
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
    """1.0 if the prediction matches any target under the variant's rule, else 0.0."""
    targets = reference_list(target)
    check_option("relaxed-accuracy variant", variant, VARIANTS)
    if variant == "pix2struct":
        hits = (relaxed_match(t, prediction, max_relative_change) for t in targets)
    else:
        answer = prediction.strip()
        hits = (relaxed_match(answer, t, max_relative_change) for t in targets)
    return float(any(hits))


@register_metric("relaxed_accuracy")
def relaxed_accuracy_metric(
    predictions: list[Prediction],
    samples: list[Sample],
    variant: str = "pix2struct",
    max_relative_change: float = 0.05,
) -> MetricResult:
    """Task adapter: ``sample.references`` = target string or list; per-sample key ``relaxed_accuracy``."""
    check_option("relaxed-accuracy variant", variant, VARIANTS)
    texts = answers_of(predictions)
    scores = [
        relaxed_accuracy(t or "", s.references, variant, max_relative_change)
        for t, s in zip(texts, samples, strict=True)
    ]
    numeric = sum(_as_number((t or "").strip()) is not None for t in texts)
    info = {"relaxed_accuracy": {"variant": variant, "n": len(scores), "numeric_predictions": numeric}}
    return mean_result("relaxed_accuracy", scores, info)
