"""ANLS (DocVQA, InfographicVQA) exactly as the evaluation script eval_mm ships computes it.

Source: QwenLM/Qwen-VL eval_mm/infographicsvqa_eval.py @ e6bbb9dd9e9fc44a4498d372e83b3b172dc1d808 (the
official DocVQA/InfographicVQA script). Its quirk is kept on purpose: the edit distance is between
normalised strings but divided by the *raw* lengths, so "  Hello   World " scores 1.0 against "hello world"
and two empty strings score 1.0. lmms-eval's ``anls`` is the same code; pix2struct's ``anls_metric`` is not
(normalised lengths, no whitespace collapse: "Hello\tworld\n" vs "hello world" is 0.833 there).
"""

from __future__ import annotations

from typing import Any

import Levenshtein

from evalkit.metrics.base import MetricResult, answers_of, mean_result, register_metric
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
    empty = sum(not reference_list(s.references) for s in samples)
    info = {"anls": {"threshold": threshold, "n": len(scores), "no_references": empty}}
    return mean_result("anls", scores, info)
