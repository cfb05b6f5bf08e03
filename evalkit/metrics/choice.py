"""Multiple-choice accuracy (ScienceQA-IMG) from log-likelihoods or from a generated answer.

Log-likelihood scoring is the paper's: QwenLM/Qwen-VL eval_mm/evaluate_multiple_choice.py
@ 10cb904198d4e0e161d0f9f36ba9fac8ac7899e4 appends " A", " B", ... to the prompt, takes the cross-entropy of
each target token, averages it over the target's tokens and predicts ``argmin`` (ties -> the first choice,
torch's argmin). ``Prediction.choice_scores`` holds one ``[logprob_sum, n_tokens]`` per choice, and
argmin(mean CE) == argmax(logprob_sum / n_tokens). A choice with n_tokens <= 0 or a non-finite score is never
picked (the script would average an empty slice to NaN) and is counted in ``info``.

Without scores (a generated answer) the text is parsed: first the option whose text equals the answer
(case-insensitive, ignoring surrounding spaces and a trailing period), so "A dog" picks the option "a dog"
rather than option A; else a leading option letter within the number of choices -- "B", "(B)", "B.", "B)",
"B: text", "Answer: B", "The answer is (B)"; a lower-case letter counts only when it is the whole answer, so
"a cat" is not option A. Anything else is unparseable (counted in ``info``) and wrong.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from typing import Any

from evalkit.metrics.base import MetricResult, register_metric
from evalkit.task import Prediction, Sample

LETTERS = string.ascii_uppercase
_LEAD_LETTER = re.compile(
    r"^\s*(?i:(?:the\s+)?(?:correct\s+)?(?:answer|option)\s*(?:is)?\s*[:：]?\s*)?"
    r"[(\[]?([A-Z])[)\]]?(?=$|[\s.:)\],;])"
)
_LONE_LETTER = re.compile(r"^\s*[(\[]?([a-zA-Z])[)\]]?\s*[.:]?\s*$")


def pick_by_loglikelihood(choice_scores: Sequence[Sequence[float]]) -> int | None:
    """Index of the highest mean log-probability (first on ties); None when no choice has a usable score."""
    best, best_index = -math.inf, None
    for index, (logprob_sum, n_tokens) in enumerate(choice_scores):
        if not _usable(logprob_sum, n_tokens):
            continue
        mean = logprob_sum / n_tokens
        if best_index is None or mean > best:
            best, best_index = mean, index
    return best_index


def _usable(logprob_sum: float | None, n_tokens: int) -> bool:
    """A finite score over at least one token. A NaN or inf is saved as null in samples/*.jsonl, so a
    resumed run sees None where the first run saw NaN: both must count as unusable."""
    return logprob_sum is not None and n_tokens > 0 and math.isfinite(logprob_sum)


def _option_text(text: str) -> str:
    return text.strip().rstrip(".").strip().lower()


def parse_choice(text: str, choices: Sequence[str]) -> int | None:
    """The option a generated answer names (letter or option text), or None (module docstring)."""
    wanted = _option_text(text)
    matches = [i for i, c in enumerate(choices) if _option_text(str(c)) == wanted]
    if len(matches) == 1:
        return matches[0]
    if len(choices) > len(LETTERS):
        return None
    for pattern in (_LEAD_LETTER, _LONE_LETTER):
        match = pattern.match(text)
        if match and (index := LETTERS.index(match.group(1).upper())) < len(choices):
            return index
    return None


def gold_index(reference: Any, choices: Sequence[str]) -> int | None:
    """The gold choice as an index: an int, a digit string, a letter, or the option text itself."""
    if isinstance(reference, bool):
        return None
    if isinstance(reference, int):
        return reference
    if isinstance(reference, str):
        ref = reference.strip()
        if ref.isdigit():
            return int(ref)
        if len(ref) == 1 and ref.upper() in LETTERS:
            return LETTERS.index(ref.upper())
        return parse_choice(ref, choices)
    return None


@register_metric("choice_accuracy")
def choice_accuracy(predictions: list[Prediction], samples: list[Sample]) -> MetricResult:
    """Task adapter: ``references`` = gold index, ``fields["choices"]`` = options; per-sample ``choice_accuracy``."""
    per_sample: list[dict[str, float]] = []
    counts = {"from_scores": 0, "from_text": 0, "unparseable": 0, "bad_scores": 0}
    for pred, sample in zip(predictions, samples, strict=True):
        choices = list(sample.fields.get("choices") or [])
        if pred.choice_scores:
            counts["from_scores"] += 1
            counts["bad_scores"] += sum(not _usable(lp, n) for lp, n in pred.choice_scores)
            picked = pick_by_loglikelihood(pred.choice_scores)
        else:
            counts["from_text"] += 1
            text = pred.answer if isinstance(pred.answer, str) else pred.output
            picked = parse_choice(text or "", choices)
        if picked is None:
            counts["unparseable"] += 1
        gold = gold_index(sample.references, choices)
        per_sample.append({"choice_accuracy": float(picked is not None and picked == gold)})
    n = len(per_sample)
    agg = sum(s["choice_accuracy"] for s in per_sample) / n if n else float("nan")
    return MetricResult(per_sample, {"choice_accuracy": agg}, {"choice_accuracy": {"n": n, **counts}})
