"""COCO caption metrics through pycocoevalcap, the official coco-caption implementation.

``pycocoevalcap.eval.COCOEvalCap`` minus its COCO-file plumbing: PTB tokenizer, then BLEU-1..4, METEOR 1.5,
ROUGE-L, CIDEr (the ``Cider`` class is CIDEr-D, the paper's number: 0.858 here is its 85.8), optionally SPICE.
pix2struct and lmms-eval call the same scorers and give the same numbers.

Intervals: per-image CIDEr and ROUGE-L average to their corpus scores, so theirs is the runner's bootstrap.
BLEU is not a mean, so its interval resamples its summed n-gram statistics (``bleu_with_ci``); METEOR
aggregates inside its jar, where each resample would be a Java round trip, so it has none. CIDEr's IDF
comes from the scored images' references, so a ``--limit`` subset is not comparable to the full split.

Costs: one tokenizer call per evaluation; one METEOR JVM (~10 s to start) per process, reused; SPICE is off
by default (it downloads CoreNLP). The one deviation, for robustness: "|||" (METEOR's field separator) is
removed from references too, not only from predictions, since one in a reference desynchronises the jar.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evalkit.metrics.base import MetricResult, answers_of, register_metric
from evalkit.metrics.exact import reference_list
from evalkit.task import Prediction, Sample

DEFAULT_METRICS: tuple[str, ...] = ("CIDEr", "BLEU", "ROUGE_L", "METEOR")
KNOWN_METRICS: tuple[str, ...] = ("CIDEr", "BLEU", "ROUGE_L", "METEOR", "SPICE")
REFERENCE_SET_NOTE = (
    "CIDEr uses document frequencies of the scored images' references: scores on a subset (--limit) are "
    "not comparable to full-split scores"
)

_meteor_lock = threading.Lock()


@dataclass
class CaptionResult:
    aggregate: dict[str, float]
    per_image: dict[str, dict[Hashable, float]] = field(default_factory=dict)  # metric -> image id -> score
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)  # corpus metrics' own intervals


def tokenize(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """PTB-tokenise captions ({id: [caption, ...]}) with pycocoevalcap's tokenizer, in one Java call."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    keyed = {key: [{"caption": str(c)} for c in caps] for key, caps in captions.items()}
    if not keyed:
        return {}
    from evalkit.quiet import child_stderr_quiet

    with child_stderr_quiet():  # its java prints "PTBTokenizer tokenized N tokens" on every call
        tokens = PTBTokenizer().tokenize(keyed)
    return {key: tokens.get(key, [""] * len(caps)) for key, caps in captions.items()}


@functools.lru_cache(maxsize=1)
def meteor_scorer() -> Any:
    """The process-wide METEOR scorer (one JVM, started on first use; ~10 s)."""
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    atexit.register(_stop_meteor, scorer)  # the JVM must not outlive the process
    return scorer


def _stop_meteor(scorer: Any) -> None:
    process = scorer.meteor_p
    with contextlib.suppress(OSError, ValueError):
        process.stdin.close()
    process.kill()
    process.wait(timeout=10)


def _spice_scorer() -> Any:
    from pycocoevalcap.spice import spice as spice_module

    lib = os.path.join(os.path.dirname(os.path.abspath(spice_module.__file__)), "lib")
    if not os.path.exists(os.path.join(lib, "stanford-corenlp-3.6.0.jar")):
        raise RuntimeError(
            "SPICE needs Stanford CoreNLP 3.6.0, which pycocoevalcap downloads into "
            f"{lib} on first use (network access, ~1 GB). Fetch it once with "
            "`python -c 'from pycocoevalcap.spice.get_stanford_models import get_stanford_models as g; g()'` "
            "or leave SPICE out of metrics=."
        )
    return spice_module.Spice()


def _meteor_safe(captions: dict[Hashable, list[str]]) -> dict[Hashable, list[str]]:
    return {k: [c.replace("|||", "").replace("  ", " ") for c in v] for k, v in captions.items()}


def evaluate_captions(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    metrics: Iterable[str] = DEFAULT_METRICS,
) -> CaptionResult:
    """Corpus scores and per-image CIDEr / ROUGE_L for one prediction per image id."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    wanted = tuple(metrics)
    unknown = [m for m in wanted if m not in KNOWN_METRICS]
    if unknown:
        raise ValueError(f"unknown caption metrics {unknown}; known: {KNOWN_METRICS}")
    ids = list(predictions)
    if set(ids) != set(references):
        raise ValueError("predictions and references must have the same image ids")
    empty_refs = [i for i in ids if not references[i]]
    if empty_refs:
        raise ValueError(f"images without reference captions: {empty_refs[:5]}")
    if not ids:
        return CaptionResult({})
    # One tokenizer call; keys are tagged so a prediction and its references never collide.
    tokens = tokenize({**{("ref", i): list(references[i]) for i in ids}, **{("res", i): [predictions[i]] for i in ids}})
    gts = {i: tokens[("ref", i)] for i in ids}
    res = {i: tokens[("res", i)] for i in ids}

    aggregate: dict[str, float] = {}
    per_image: dict[str, dict[Hashable, float]] = {}
    ci95: dict[str, tuple[float, float]] = {}
    if "CIDEr" in wanted:
        score, scores = Cider().compute_score(gts, res)
        aggregate["CIDEr"] = float(score)
        per_image["CIDEr"] = {i: float(s) for i, s in zip(gts, scores)}
    if "BLEU" in wanted:
        score, intervals = bleu_with_ci(gts, res)
        aggregate.update({f"BLEU_{n + 1}": float(s) for n, s in enumerate(score)})
        ci95.update({f"BLEU_{n + 1}": ci for n, ci in enumerate(intervals)})
    if "METEOR" in wanted:
        with _meteor_lock:
            score, _ = meteor_scorer().compute_score(_meteor_safe(gts), _meteor_safe(res))
        aggregate["METEOR"] = float(score)
    if "ROUGE_L" in wanted:
        score, scores = Rouge().compute_score(gts, res)
        aggregate["ROUGE_L"] = float(score)
        per_image["ROUGE_L"] = {i: float(s) for i, s in zip(gts, scores)}
    if "SPICE" in wanted:
        score, _ = _spice_scorer().compute_score(gts, res)
        aggregate["SPICE"] = float(score)
    return CaptionResult(aggregate, per_image, ci95)


def bleu_with_ci(
    gts: Mapping[Hashable, list[str]], res: Mapping[Hashable, list[str]], n_resamples: int = 1000, seed: int = 0
) -> tuple[list[float], list[tuple[float, float]]]:
    """Corpus BLEU-1..4 exactly as ``Bleu(4).compute_score`` and their bootstrap 95% intervals."""
    from evalkit.metrics.stats import percentile_interval

    score, resampled = bleu_resamples(gts, res, n_resamples, seed)
    return score, [percentile_interval(resampled[:, k]) for k in range(4)]


def bleu_resamples(
    gts: Mapping[Hashable, list[str]], res: Mapping[Hashable, list[str]], n_resamples: int, seed: int = 0
) -> tuple[list[float], np.ndarray]:
    """(corpus BLEU-1..4, [n_resamples, 4] BLEU of image resamples).

    The corpus score is pycocoevalcap's BleuScorer with the "closest" reference length, as
    ``Bleu(4).compute_score``. Corpus BLEU is a function of n-gram matches, guesses and lengths
    summed over images, so each resample's BLEU is that function of the resampled sums of the
    scorer's own per-image counts: nothing is re-tokenised or re-counted.
    """
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    from evalkit.metrics.stats import bootstrap_totals

    scorer = BleuScorer(n=4)
    for key in gts:  # the loop of Bleu.compute_score
        scorer += (res[key][0], gts[key])
    score, _ = scorer.compute_score(option="closest", verbose=0)
    stats = np.array([[c["testlen"], scorer._single_reflen(c["reflen"], "closest", c["testlen"]),
                       *c["guess"], *c["correct"]] for c in scorer.ctest], dtype=np.float64)
    return [float(x) for x in score], bleu_from_totals(bootstrap_totals(stats, n_resamples, seed))


def bleu_from_totals(totals: np.ndarray, n: int = 4) -> np.ndarray:
    """BleuScorer.compute_score's corpus formula, vectorised over rows of
    [testlen, reflen, guess_1..n, correct_1..n] totals (its tiny/small guards included)."""
    tiny, small = 1e-15, 1e-9
    guess, correct = totals[:, 2:2 + n], totals[:, 2 + n:2 + 2 * n]
    bleu = np.cumprod((correct + tiny) / (guess + small), axis=1) ** (1.0 / np.arange(1, n + 1))
    ratio = (totals[:, 0] + tiny) / (totals[:, 1] + small)
    penalty = np.where(ratio < 1, np.exp(1 - 1 / np.where(ratio < 1, ratio, 1)), 1.0)
    return bleu * penalty[:, None]


def caption_scores(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    metrics: Iterable[str] = DEFAULT_METRICS,
) -> dict[str, float]:
    """{"CIDEr", "BLEU_1".."BLEU_4", "METEOR", "ROUGE_L"[, "SPICE"]: corpus score} as COCOEvalCap computes them."""
    return evaluate_captions(predictions, references, metrics).aggregate


@register_metric("caption")
def caption_metric(
    predictions: list[Prediction], samples: list[Sample], metrics: Sequence[str] = DEFAULT_METRICS
) -> MetricResult:
    """Task adapter: ``references`` = reference captions; samples sharing ``metadata["image_id"]`` are one image
    (the first sample's prediction is scored, as COCOEvalCap allows one caption per image). Per-sample keys
    ``CIDEr`` and ``ROUGE_L``; aggregates CIDEr (first: the paper's number), BLEU_1..4, METEOR, ROUGE_L."""
    texts = answers_of(predictions)
    keys: list[Hashable] = [s.metadata.get("image_id", s.id) for s in samples]
    preds: dict[Hashable, str] = {}
    refs: dict[Hashable, list[str]] = {}
    for key, text, sample in zip(keys, texts, samples, strict=True):
        if key not in preds:
            preds[key] = text or ""
            refs[key] = reference_list(sample.references)  # a bare string is one caption, not its letters
    result = evaluate_captions(preds, refs, metrics)
    per_sample = [{m: scores[key] for m, scores in result.per_image.items()} for key in keys]
    info = {
        "caption": {
            "images": len(preds),
            "duplicate_image_samples": len(keys) - len(preds),
            "metrics": list(metrics),
            "subset_note": REFERENCE_SET_NOTE,  # shown only when the run scored a subset
        }
    }
    return MetricResult(per_sample, result.aggregate, info, ci95=result.ci95)
