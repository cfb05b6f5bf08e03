"""Multiple-choice accuracy (ScienceQA-IMG) from log-likelihoods or from a generated answer.

Log-likelihood scoring is the paper's: QwenLM/Qwen-VL eval_mm/evaluate_multiple_choice.py
@ 10cb904198d4e0e161d0f9f36ba9fac8ac7899e4 predicts the argmin of each choice's mean target-token
cross-entropy (ties -> the first, as torch's argmin), i.e. the argmax of ``logprob_sum / n_tokens`` over
``Prediction.choice_scores``. A choice without a usable score is never picked (the script would average an
empty slice to NaN) and is counted in ``info``. Without scores the generated text is parsed (``parse_choice``).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from typing import Any

from evalkit.metrics.base import MetricResult, answer_text, mean_result, register_metric
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
    """The option a generated answer names, or None: its option text first, so "A dog" is the option "a dog"
    and not option A; else a leading letter ("B", "(B)", "Answer: B"), lower-case only when it is the whole
    answer, so "a cat" is not option A."""
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


def picked_index(pred: Prediction, choices: Sequence[str]) -> int | None:
    """The choice a prediction makes: by its scores when it has them, else by its text."""
    if pred.choice_scores:
        return pick_by_loglikelihood(pred.choice_scores)
    return parse_choice(answer_text(pred) or "", choices)


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
    hits: list[float] = []
    counts = {"from_scores": 0, "from_text": 0, "unparseable": 0, "bad_scores": 0}
    for pred, sample in zip(predictions, samples, strict=True):
        choices = list(sample.fields.get("choices") or [])
        if pred.choice_scores:
            counts["from_scores"] += 1
            counts["bad_scores"] += sum(not _usable(lp, n) for lp, n in pred.choice_scores)
        else:
            counts["from_text"] += 1
        picked = picked_index(pred, choices)
        if picked is None:
            counts["unparseable"] += 1
        gold = gold_index(sample.references, choices)
        hits.append(float(picked is not None and picked == gold))
    return mean_result("choice_accuracy", hits, {"choice_accuracy": {"n": len(hits), **counts}})
