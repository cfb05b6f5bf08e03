"""ANLS (DocVQA, InfographicVQA) exactly as the evaluation script eval_mm ships computes it.

Source: QwenLM/Qwen-VL eval_mm/infographicsvqa_eval.py @ e6bbb9dd9e9fc44a4498d372e83b3b172dc1d808 (the
official DocVQA/InfographicVQA script; evaluate_vqa.py shells out to it for docvqa_val). Per question and
reference: edit distance between the *normalised* strings (strip, lower-case, runs of whitespace -> one space)
divided by ``max(len(ref.upper()), len(pred.upper()))`` of the *raw* strings (0 when both are empty); the score
is 1 - the smallest such value over the references, set to 0 when below the threshold 0.5 (a value of exactly
0.5 is kept). The raw-length denominator is a quirk of the script, kept on purpose: "  Hello   World " against
"hello world" scores 1.0, and a prediction and reference that are both empty score 1.0.

lmms-eval's ``anls`` (lmms_eval/api/metrics.py) is the same code and gives the same values. pix2struct's
``anls_metric`` (google-research/pix2struct metrics.py) differs: it lower-cases only (no strip or whitespace
collapse), uses the normalised lengths, and divides by zero when both strings are empty -- e.g. "Hello\\tworld\\n"
vs "hello world" is 1.0 here and 0.833 there. The Levenshtein package's distance is the same unit-cost edit
distance as the script's pure-Python ``levenshtein_distance``.
"""

from __future__ import annotations

from typing import Any

import Levenshtein

from evalkit.metrics.base import MetricResult, answers_of, register_metric
from evalkit.metrics.exact import reference_list
from evalkit.task import Prediction, Sample


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(prediction: str, answers: Any, threshold: float = 0.5) -> float:
    """ANLS of one prediction against its reference answers; 0.0 when there are none."""
    refs = reference_list(answers)
    if not refs:
        return 0.0
    pred_norm = _normalise(prediction)
    pred_len = len(prediction.upper())
    best = min(
        Levenshtein.distance(_normalise(ref), pred_norm) / length
        if (length := max(len(ref.upper()), pred_len))
        else 0.0
        for ref in refs
    )
    score = 1.0 - best
    return 0.0 if score < threshold else score


@register_metric("anls")
def anls_metric(predictions: list[Prediction], samples: list[Sample], threshold: float = 0.5) -> MetricResult:
    """Task adapter: ``sample.references`` = answer string(s); per-sample key ``anls``."""
    texts = answers_of(predictions)
    scores = [anls(t or "", s.references, threshold) for t, s in zip(texts, samples, strict=True)]
    agg = sum(scores) / len(scores) if scores else float("nan")
    empty = sum(not reference_list(s.references) for s in samples)
    info = {"anls": {"threshold": threshold, "n": len(scores), "no_references": empty}}
    return MetricResult([{"anls": v} for v in scores], {"anls": agg}, info)
