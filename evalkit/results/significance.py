"""Whether a difference between two runs is real: per-sample scores, corpus metrics recomputed on
shared samples, and the test that decides (used by `compare`, `check` and `diff`).

Corpus metrics (CIDEr, BLEU, METEOR, ROUGE-L) depend on the whole set scored (CIDEr's document
frequencies, BLEU's corpus n-gram totals), so where two runs scored different sample sets they
are recomputed on the samples both runs share, on both sides (`ScoreBook.shared`). Significance
comes from a paired test on the per-sample scores of shared samples (`evalkit.metrics.stats.paired_test`:
McNemar for 0/1 scores, paired bootstrap otherwise); where one side has no per-sample scores
(a committed bare run.json), from a z-test on the two 95% CIs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from evalkit.results.runs import Run, RunError
from evalkit.results.tables import POINTS
from evalkit.task import Prediction

CORPUS_METRICS = frozenset({"CIDEr", "BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L"})


@dataclass
class SharedScores:
    """A corpus metric of two runs recomputed on the samples both scored (stored 0..1 scale)."""

    n: int
    base: float
    other: float
    base_scores: dict[str, float]  # per-sample, where the metric has them (CIDEr, ROUGE_L)
    other_scores: dict[str, float]


class ScoreBook:
    """Per-sample predictions of runs, read once per (run, result key) however many metrics ask."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, str], dict[str, Prediction] | None] = {}
        self._rescored: dict[tuple[int, str, tuple[str, ...]], Any] = {}

    def shared(self, base: Run, other: Run, key: str, metric: str) -> SharedScores | None:
        """`metric` recomputed on the shared samples when it is a corpus metric and the two runs
        scored different sample sets; None when the stored values are already comparable."""
        if metric not in CORPUS_METRICS:
            return None
        pa, pb = self.predictions(base, key), self.predictions(other, key)
        if not pa or not pb or pa.keys() == pb.keys():
            return None
        ids = tuple(sorted(i for i in pa.keys() & pb.keys() if pa[i].references and pb[i].references))
        if not ids:
            return None
        ra, rb = self._rescore(base, key, ids), self._rescore(other, key, ids)
        return SharedScores(len(ids), ra.aggregate[metric], rb.aggregate[metric],
                            ra.per_image.get(metric, {}), rb.per_image.get(metric, {}))

    def _rescore(self, run: Run, key: str, ids: tuple[str, ...]) -> Any:
        slot = (id(run), key, ids)
        if slot not in self._rescored:
            from evalkit.metrics.caption import evaluate_captions
            from evalkit.metrics.exact import reference_list

            preds = self.predictions(run, key) or {}
            answers = {i: (preds[i].answer if isinstance(preds[i].answer, str) else preds[i].output) or "" for i in ids}
            self._rescored[slot] = evaluate_captions(answers, {i: reference_list(preds[i].references) for i in ids})
        return self._rescored[slot]

    def predictions(self, run: Run, key: str) -> dict[str, Prediction] | None:
        slot = (id(run), key)
        if slot not in self._cache:
            try:
                self._cache[slot] = {p.sample_id: p for p in run.samples(key)}
            except RunError:
                self._cache[slot] = None
        return self._cache[slot]

    def scores(self, run: Run, key: str, metric: str) -> dict[str, float] | None:
        preds = self.predictions(run, key)
        if not preds:
            return None
        out = {sid: float(p.scores[metric]) for sid, p in preds.items() if metric in p.scores}
        return out or None


@dataclass
class Significance:
    """The outcome of testing one metric of one task between two runs."""

    p: float | None  # None: not testable (no per-sample scores and no CIs)
    method: str  # "paired" | "ci" | "none"
    n_shared: int = 0  # samples the paired test used

    def below(self, alpha: float) -> bool:
        return self.p is not None and self.p < alpha


def ci_z_test(a: dict[str, Any], b: dict[str, Any]) -> Significance:
    """Two-sided z-test from two 95% CIs (SE = width / 3.92), treating the runs as independent.

    Used only where per-sample scores are missing. Ignoring the positive correlation of two
    models on the same samples makes it conservative: it flags fewer drops than a paired test.
    """
    ca, cb = a.get("ci95"), b.get("ci95")
    if not ca or not cb or None in (*ca, *cb, a.get("value"), b.get("value")):
        return Significance(None, "none")
    se = math.hypot((ca[1] - ca[0]) / 3.92, (cb[1] - cb[0]) / 3.92)
    diff = b["value"] - a["value"]
    if se == 0:
        return Significance(1.0 if diff == 0 else 0.0, "ci")
    return Significance(math.erfc(abs(diff) / se / math.sqrt(2)), "ci")


def significance_of(book: ScoreBook, base: Run, other: Run, key: str, metric: str) -> Significance:
    """Paired test on shared samples where both runs have per-sample scores, else the CI z-test.
    A corpus metric on different sample sets is tested on its values recomputed on the shared ones."""
    rescored = book.shared(base, other, key, metric)
    if rescored is not None:
        a, b = rescored.base_scores, rescored.other_scores
        if not a and not b:  # BLEU / METEOR: no per-sample scores; equal recomputed values differ by nothing
            same = rescored.base == rescored.other
            return Significance(1.0 if same else None, "shared" if same else "none", rescored.n)
    else:
        a, b = book.scores(base, key, metric), book.scores(other, key, metric)
    if a and b:
        shared = sorted(a.keys() & b.keys())
        if len(shared) >= 2:
            from evalkit.metrics.stats import paired_test

            p = paired_test([a[i] for i in shared], [b[i] for i in shared])
            return Significance(float(p), "paired", len(shared))
    ma = base.tasks.get(key, {}).get("metrics", {}).get(metric, {})
    mb = other.tasks.get(key, {}).get("metrics", {}).get(metric, {})
    return ci_z_test(ma, mb)


def shared_note(key: str, metric: str, label: str, base_label: str, s: SharedScores) -> str:
    """The note that says a delta compares a corpus metric recomputed on shared samples."""
    return (f"{key}: {metric} recomputed on the {s.n} samples {label} and {base_label} share, for the delta and "
            f"the test ({s.other * POINTS:.2f} vs {s.base * POINTS:.2f}): a corpus metric depends on the set scored")
