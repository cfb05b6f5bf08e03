"""MMBench dev accuracy the three ways Qwen-VL's eval_mm/mmbench scripts count it.

Source: QwenLM/Qwen-VL eval_mm/mmbench @ 10cb904198d4e0e161d0f9f36ba9fac8ac7899e4. MMBench holds every
question several times with its options rotated (index rotation x 1,000,000 + question), so one accuracy
is not enough:

- `mmbench_circular` (mmbench_evaluation.py, CircularEval): every rotation present answered right.
- `mmbench_consistent` (mmbench_evaluation_tricky.py, the number Qwen-VL submits): the option text picked
  most often across rotations. The script breaks ties with an unseeded `random.choice`; here the seed is the
  question, so reruns agree (any tie-break is the script's).
- `mmbench_accuracy` over every row; `mmbench_vanilla` over rotation 0 only; `mmbench_circular/<category>`.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass

from evalkit.metrics.base import MetricResult, mean, register_metric
from evalkit.metrics.choice import gold_index, picked_index
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
        "mmbench_circular": mean(list(circular.values())),
        "mmbench_consistent": mean(list(consistent.values())),
        "mmbench_accuracy": mean([r.right for r in rows]),
        "mmbench_vanilla": mean([r.right for r in originals]),
    }
    by_category: dict[str, list[bool]] = defaultdict(list)
    for q, hit in circular.items():
        by_category[questions[q][0].category].append(hit)
    for category in sorted(by_category):
        aggregate[f"mmbench_circular/{category}"] = mean(by_category[category])
    rotations = Counter(len(g) for g in questions.values())
    info = {"mmbench": {"questions": n_q, "rows": len(rows), "rotations_per_question": dict(sorted(rotations.items())),
                        "unparseable": sum(r.picked is None for r in rows)}}
    return MetricResult(per_sample, aggregate, info)
