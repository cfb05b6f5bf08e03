"""MMBench dev accuracy the three ways Qwen-VL's eval_mm/mmbench scripts count it.

MMBench's files hold every question several times with its options rotated ("circular"): the
copy of question i with rotation r has index r x 1,000,000 + i. Predictions come from
evaluate_multiple_choice_mmbench.py: the best mean log-likelihood of " A" .. " D" after the
prompt, as ScienceQA's. Source: QwenLM/Qwen-VL eval_mm/mmbench @ 10cb904198d4e0e161d0f9f36ba9fac8ac7899e4.

- `mmbench_circular` (mmbench_evaluation.py, MMBench's CircularEval): a question counts when
  every rotation present is answered right. (MMBENCH.md labels this script "without consistency
  constrain".)
- `mmbench_consistent` (mmbench_evaluation_tricky.py, "with consistency constrain", the number
  Qwen-VL submits: mmbench_predict_to_submission.py rewrites every rotation to one answer): the
  option *text* predicted most often across the rotations, compared with the answer text. The
  script breaks a tie with an unseeded `random.choice`; here the tie is broken by
  `random.Random(seed of the question index)`, so reruns agree (any tie-break is the script's).
- `mmbench_accuracy`: plain accuracy over every row evaluated; `mmbench_vanilla`: over the
  original (rotation 0) rows only.
- `mmbench_circular/<category>`: CircularEval per MMBench category.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass

from evalkit.metrics.base import MetricResult, register_metric
from evalkit.metrics.choice import gold_index, parse_choice, pick_by_loglikelihood
from evalkit.task import Prediction, Sample, stable_hash

ROTATION = 1_000_000


@dataclass
class Answered:
    """One evaluated row: which question and rotation it is, its options and the picked one."""

    question: int
    rotation: int
    choices: list[str]
    picked: int | None
    gold: int | None
    category: str

    @property
    def right(self) -> bool:
        return self.picked is not None and self.picked == self.gold

    @property
    def picked_text(self) -> str | None:
        return self.choices[self.picked] if self.picked is not None and self.picked < len(self.choices) else None


def picked_index(pred: Prediction, choices: list[str]) -> int | None:
    if pred.choice_scores:
        return pick_by_loglikelihood(pred.choice_scores)
    text = pred.answer if isinstance(pred.answer, str) else pred.output
    return parse_choice(text or "", choices)


def majority(texts: list[str | None], question: int, seed: int = 0) -> str | None:
    """The most frequent option text (mmbench_evaluation_tricky.py's most_common_elements), ties seeded."""
    counts = Counter(texts)
    top = max(counts.values())
    tied = [t for t, c in counts.items() if c == top]
    return tied[0] if len(tied) == 1 else random.Random(int(stable_hash([seed, question]), 16)).choice(tied)


def answered_rows(predictions: list[Prediction], samples: list[Sample]) -> list[Answered]:
    rows = []
    for pred, sample in zip(predictions, samples, strict=True):
        index = int(sample.metadata.get("mmbench_index", sample.id))
        choices = [str(c) for c in sample.fields.get("choices") or []]
        rows.append(Answered(index % ROTATION, index // ROTATION, choices, picked_index(pred, choices),
                             gold_index(sample.references, choices), str(sample.metadata.get("category", ""))))
    return rows


@register_metric("mmbench")
def mmbench(predictions: list[Prediction], samples: list[Sample], seed: int = 0) -> MetricResult:
    """Task adapter: `fields.choices` the options, references the answer letter, `meta.mmbench_index`
    the file's index, `meta.category` the MMBench category."""
    rows = answered_rows(predictions, samples)
    per_sample = [{"mmbench_accuracy": float(r.right)} for r in rows]
    questions: dict[int, list[Answered]] = defaultdict(list)
    for r in rows:
        questions[r.question].append(r)
    circular: dict[int, bool] = {}
    consistent: dict[int, bool] = {}
    for q, group in questions.items():
        group.sort(key=lambda r: r.rotation)
        present = [r for r in group if r.rotation < 4]  # the scripts look at rotations 0..3
        if not present:
            continue
        circular[q] = all(r.right for r in present)
        answer = present[-1].choices[present[-1].gold] if present[-1].gold is not None else None
        consistent[q] = answer is not None and majority([r.picked_text for r in present], q, seed) == answer
    n_q = len(circular)
    originals = [r for r in rows if r.rotation == 0]
    aggregate = {
        "mmbench_circular": sum(circular.values()) / n_q if n_q else float("nan"),
        "mmbench_consistent": sum(consistent.values()) / n_q if n_q else float("nan"),
        "mmbench_accuracy": sum(r.right for r in rows) / len(rows) if rows else float("nan"),
        "mmbench_vanilla": sum(r.right for r in originals) / len(originals) if originals else float("nan"),
    }
    by_category: dict[str, list[bool]] = defaultdict(list)
    for q, hit in circular.items():
        by_category[questions[q][0].category].append(hit)
    for category in sorted(by_category):
        hits = by_category[category]
        aggregate[f"mmbench_circular/{category}"] = sum(hits) / len(hits)
    rotations = Counter(len(g) for g in questions.values())
    info = {"mmbench": {"questions": n_q, "rows": len(rows), "rotations_per_question": dict(sorted(rotations.items())),
                        "unparseable": sum(r.picked is None for r in rows)}}
    return MetricResult(per_sample, aggregate, info)
