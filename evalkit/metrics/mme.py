"""MME score as MME's official eval_tool/calculation.py computes it.

Per subtask: every answer is lower-cased and parsed (`parse_yes_no`: "yes"/"no" as is, else "yes"
or "no" found in its first 4 characters, "yes" first, else "other"); `acc` is the fraction of
questions answered right, `acc_plus` the fraction of images with both of their questions right;
the subtask score is (acc + acc_plus) x 100 and a group's score (perception: 10 subtasks, up to
2000; cognition: 4, up to 800) is the sum of its subtasks' scores.

Stored on evalkit's scale (`evalkit compare` shows stored x 100): `mme_score` = the sum over
subtasks of (acc + acc_plus), so 14.8758 is the official 1487.58; `mme/<subtask>` = that subtask's
acc + acc_plus. The per-sample key `mme_correct` (0/1) carries paired tests and a CI on `acc`.
calculation.py pairs the two questions of an image by their consecutive lines; here they are
grouped by image (`meta.image_key`, the hub's question_id "<subtask>/<image>"), the same pairs
for MME's files. An image with one question (a `--limit` cut) counts for acc+ on that question
alone and is reported in `info`. The values the official script gives on the replay fixture are
in tests/fixtures/chat_bench/mme_expected.json (tests/fixtures/README.md says how they were made).
"""

from __future__ import annotations

from collections import defaultdict

from evalkit.metrics.base import MetricResult, answers_of, register_metric
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
        acc = sum(hits) / len(hits)
        acc_plus = sum(all(v) for v in images[subtask].values()) / len(images[subtask])
        table[subtask] = {"acc": acc, "acc_plus": acc_plus, "score": 100 * (acc + acc_plus), "questions": len(hits)}
        aggregate[f"mme/{subtask}"] = acc + acc_plus
    total = sum(aggregate.values())
    n = len(per_sample)
    lonely = sum(len(v) != 2 for per in images.values() for v in per.values())
    summary = ", ".join(f"{s} {row['score']:.2f}" for s, row in table.items())
    info = {"mme": {"subtasks": table, "score_official_points": 100 * total, "other_answers": others,
                    "images_without_two_questions": lonely,
                    "note": f"MME score {100 * total:.2f} (official points; per subtask: {summary})"}}
    return MetricResult(per_sample, {"mme_score": total, **aggregate,
                                     "mme_correct": sum(s["mme_correct"] for s in per_sample) / n if n else float("nan")},
                        info)
