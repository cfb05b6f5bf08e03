"""Run folders written directly (run.json + samples/<key>.jsonl) for the compare/check/report tests.

Writing them by hand keeps those tests fast and lets each one build exactly the situation it is
about (a significant drop, a different sample set, a missing task) without a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.results.runs import SCHEMA, SampleCache, atomic_write_json, result_key
from evalkit.task import Prediction, stable_hash


@dataclass
class FakeTask:
    task: str
    scores: list[float]
    metric: str = "accuracy"
    groups: list[str] = field(default_factory=lambda: ["vqa"])
    shots: int = 0
    ids: list[str] | None = None
    outputs: list[str] | None = None
    references: list[Any] | None = None
    entry: dict[str, Any] = field(default_factory=dict)  # overrides of run.json's task entry

    @property
    def key(self) -> str:
        return result_key(self.task, self.shots)

    def sample_ids(self) -> list[str]:
        return self.ids or [str(i) for i in range(len(self.scores))]

    def predictions(self) -> list[Prediction]:
        outputs = self.outputs or [("right" if s >= 0.5 else "wrong") for s in self.scores]
        refs = self.references or [["right"]] * len(self.scores)
        return [Prediction(sample_id=sid, task=self.task, output=o, answer=o, references=r, scores={self.metric: s},
                           prompt=f"<image>question {sid}? Answer:")
                for sid, s, o, r in zip(self.sample_ids(), self.scores, outputs, refs)]

    def to_entry(self) -> dict[str, Any]:
        n = len(self.scores)
        mean = sum(self.scores) / n
        sd = math.sqrt(sum((s - mean) ** 2 for s in self.scores) / max(n - 1, 1))
        half = 1.96 * sd / math.sqrt(n)
        entry = {
            "task": self.task, "shots": self.shots, "spec_hash": "spec", "prompt_hash": "prompt",
            "dataset_fingerprint": stable_hash(self.sample_ids()), "n_samples": n, "n_errors": 0,
            "primary_metric": self.metric, "groups": self.groups,
            "metrics": {self.metric: {"value": mean, "n": n, "ci95": [max(mean - half, 0.0), min(mean + half, max(self.scores))]}},
            "info": {},
        }
        entry.update(self.entry)
        return entry


def write_run(folder: Path, tasks: list[FakeTask], samples: bool = True, **settings: Any) -> Path:
    folder = Path(folder)
    data = {
        "schema": SCHEMA, "evalkit_version": "test", "created": "2024-01-01T00:00:00+00:00",
        "model": {"name": "fake", "spec": f"replay:{folder.name}"},
        "settings": {"limit": None, "seed": 0, "prompt_style": "base", "data_dir": None, "shots": [0], **settings},
        "tasks": {t.key: t.to_entry() for t in tasks},
        "timing": {"total_seconds": 1.0},
    }
    atomic_write_json(folder / "run.json", data)
    if samples:
        for t in tasks:
            SampleCache(folder / "samples" / f"{t.key}.jsonl").finalize(t.predictions())
    return folder
