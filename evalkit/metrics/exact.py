"""Normalised exact match as Qwen-VL's eval_mm/evaluate_vqa.py scores GQA, OCR-VQA and AI2D.

Source: QwenLM/Qwen-VL eval_mm/evaluate_vqa.py @ 371c034ddb13541b3e41a445ba8f02162046e0bc:
``evaluate_exact_match_accuracy`` (``normalize="plain"``, OCR-VQA and AI2D) and, for GQA
(``normalize="gqa"``), its textual answer clean-up first. That clean-up has sharp edges that are part of the
paper's numbers ("This is a table" -> "", since "this" contains "is "; "banana split" -> "split"), so they
are kept (tests/test_metrics_text.py). ``normalize="none"`` is for references that are already canonical.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evalkit.metrics.base import MetricResult, answers_of, check_option, mean_result, register_metric
from evalkit.task import Prediction, Sample

# (marker, keep the part after it?) applied in this order by eval_mm's gqa post-processing.
_GQA_CUTS: tuple[tuple[str, bool], ...] = (
    ("is ", True), ("are ", True), ("a ", True), ("an ", True), ("the ", True), (" of", False),
)


def gqa_clean(answer: str) -> str:
    """eval_mm's GQA answer clean-up (first clause, drop leading is/are/a/an/the and a trailing "of ...")."""
    text = answer.strip()
    for stop in (".", ",", "!"):
        text = text.split(stop, 1)[0]
    text = text.lower()
    for marker, keep_after in _GQA_CUTS:
        if marker in text:
            # split(marker)[1] in the original: the piece between the first and second occurrence.
            pieces = text.split(marker)
            text = pieces[1] if keep_after else pieces[0]
    return text.strip()


def _plain(text: str) -> str:
    return text.strip().lower()


NORMALIZERS: dict[str, tuple[Callable[[str], str], Callable[[str], str]]] = {
    # name: (prediction normaliser, reference normaliser)
    "plain": (_plain, _plain),
    "gqa": (lambda t: _plain(gqa_clean(t)), _plain),
    "none": (lambda t: t, lambda t: t),
}


def reference_list(references: Any) -> list[str]:
    """A sample's references as a list of strings (a bare string is one reference; None is none)."""
    if references is None:
        return []
    if isinstance(references, str):
        return [references]
    if isinstance(references, (int, float)):
        return [str(references)]
    return [str(r) for r in references]


def exact_match(prediction: str, references: Any, normalize: str = "plain") -> float:
    """1.0 if the normalised prediction equals any normalised reference, else 0.0 (0.0 with no references)."""
    check_option("normalize", normalize, sorted(NORMALIZERS))
    norm_pred, norm_ref = NORMALIZERS[normalize]
    pred = norm_pred(prediction)
    return float(any(pred == norm_ref(ref) for ref in reference_list(references)))


@register_metric("exact_match")
def exact_match_metric(
    predictions: list[Prediction], samples: list[Sample], normalize: str = "plain"
) -> MetricResult:
    """Task adapter: ``sample.references`` = answer string(s); per-sample key ``exact_match``."""
    check_option("normalize", normalize, sorted(NORMALIZERS))
    texts = answers_of(predictions)
    scores = [exact_match(t or "", s.references, normalize) for t, s in zip(texts, samples, strict=True)]
    empty = sum(not reference_list(s.references) for s in samples)
    info = {"exact_match": {"normalize": normalize, "n": len(scores), "no_references": empty}}
    return mean_result("exact_match", scores, info)
