"""MME score as MME's official eval_tool/calculation.py computes it.

A subtask scores (acc + acc_plus) x 100, acc_plus counting images with both questions right; a group's
score (perception up to 2000, cognition up to 800) is the sum over its subtasks. Stored on evalkit's scale
(`evalkit compare` shows stored x 100): `mme_score` 14.8758 is the official 1487.58. `mme_correct` (0/1 per
question) is there for paired tests and a CI. calculation.py pairs an image's questions by consecutive
lines; here by `meta.image_key`, the same pairs on MME's files, and robust to a `--limit` cut (an image
left with one question is reported in `info`). tests/fixtures/chat_bench/mme_expected.json holds the
official script's values on the replay fixture.
"""

from __future__ import annotations

from collections import defaultdict

from evalkit.metrics.base import MetricResult, answers_of, mean, register_metric
from evalkit.task import Prediction, Sample


def parse_yes_no(text: str) -> str:
    """calculation.py's parse_pred_ans on the lower-cased answer."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


@register_metric("mme_score")
def mme_score(predictions: list[Prediction], samples: list[Sample]) -> MetricResult:
    """Task adapter: references "Yes"/"No", `meta.category` the subtask, `meta.image_key` the image."""
    per_sample: list[dict[str, float]] = []
    correct: dict[str, list[int]] = defaultdict(list)  # subtask -> 0/1 per question
    images: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))  # subtask -> image -> 0/1s
    others = 0
    for text, sample in zip(answers_of(predictions), samples, strict=True):
        gold = str(sample.references or "").lower()
        if gold not in ("yes", "no"):
            raise ValueError(f"MME sample {sample.id}: answer must be yes or no, got {sample.references!r}")
        parsed = parse_yes_no(text or "")
        others += parsed == "other"
        hit = int(parsed == gold)
        subtask = str(sample.metadata.get("category"))
        correct[subtask].append(hit)
        images[subtask][str(sample.metadata.get("image_key", sample.id))].append(hit)
        per_sample.append({"mme_correct": float(hit)})
    aggregate: dict[str, float] = {}
    table: dict[str, dict[str, float]] = {}
    for subtask, hits in correct.items():
        acc = mean(hits)
        acc_plus = mean([all(v) for v in images[subtask].values()])
        table[subtask] = {"acc": acc, "acc_plus": acc_plus, "score": 100 * (acc + acc_plus), "questions": len(hits)}
        aggregate[f"mme/{subtask}"] = acc + acc_plus
    total = sum(aggregate.values())
    lonely = sum(len(v) != 2 for per in images.values() for v in per.values())
    summary = ", ".join(f"{s} {row['score']:.2f}" for s, row in table.items())
    info = {"mme": {"subtasks": table, "score_official_points": 100 * total, "other_answers": others,
                    "images_without_two_questions": lonely,
                    "note": f"MME score {100 * total:.2f} (official points; per subtask: {summary})"}}
    return MetricResult(per_sample, {"mme_score": total, **aggregate,
                                     "mme_correct": mean([s["mme_correct"] for s in per_sample])}, info)
