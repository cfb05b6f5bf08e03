"""Tabular submission files: MMBench test (OpenCompass server) and TouchStone (GPT-4 judge).

- MMBench: Qwen-VL's eval_mm/mmbench/mmbench_predict_to_submission.py drops the test TSV's image
  column, adds `prediction` (a letter) and writes the table; before that it makes the rotations of
  each question agree ("constrained"): the option text predicted most often across them (seeded
  tie-break, see `evalkit.metrics.mmbench.majority`) becomes every rotation's answer, as the letter
  that text has in that rotation. The script saves .xlsx (openpyxl); evalkit writes the same table
  as TSV (no spreadsheet dependency) and the summary says to convert it.
- TouchStone: its eval.py reads a TSV with index, question, human_annotation, gpt4_ha_answer,
  category, task_name (copied from touchstone_20230831.tsv) and `response`, the model's answer,
  all 908 rows; it then asks GPT-4 to judge (a paid API evalkit does not call).
Rows carry the dataset's text columns in `meta.record` (the `record` reshaping option).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evalkit.metrics.choice import picked_index
from evalkit.metrics.mmbench import ROTATION, majority
from evalkit.task import Prediction, Sample

TOUCHSTONE_COLUMNS = ["index", "question", "human_annotation", "gpt4_ha_answer", "category", "task_name"]


def _write_tsv(records: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pd.DataFrame.from_records(records, columns=columns).to_csv(tmp, sep="\t", index=False)
    os.replace(tmp, path)


def _answer(pred: Prediction) -> str:
    return pred.answer if isinstance(pred.answer, str) else pred.output


def mmbench_table(predictions: list[Prediction], samples: list[Sample], path: Path) -> None:
    rows = []
    for pred, sample in zip(predictions, samples, strict=True):
        index = int(sample.metadata.get("mmbench_index", sample.id))
        choices = [str(c) for c in sample.fields.get("choices") or []]
        picked = picked_index(pred, choices)
        rows.append((index, choices, choices[picked] if picked is not None else None, sample))
    texts: dict[int, list[str | None]] = defaultdict(list)
    for index, _, text, _ in sorted(rows, key=lambda r: r[0]):
        if index // ROTATION < 4:
            texts[index % ROTATION].append(text)
    records, columns = [], []
    for index, choices, _, sample in rows:
        agreed = majority(texts[index % ROTATION], index % ROTATION)
        record = dict(sample.metadata.get("record") or {"index": index})
        record.pop("image", None)
        record["prediction"] = chr(ord("A") + choices.index(agreed)) if agreed in choices else ""
        columns += [c for c in record if c not in columns]
        records.append(record)
    _write_tsv(records, columns, path)


def touchstone_table(predictions: list[Prediction], samples: list[Sample], path: Path) -> None:
    records = []
    for pred, sample in zip(predictions, samples, strict=True):
        record = sample.metadata.get("record") or {}
        records.append({**{c: record.get(c) for c in TOUCHSTONE_COLUMNS}, "response": _answer(pred)})
    _write_tsv(records, [*TOUCHSTONE_COLUMNS, "response"], path)


TABLES: dict[str, tuple[str, Callable[[list[Prediction], list[Sample], Path], None]]] = {
    "mmbench": (".tsv", mmbench_table),
    "touchstone": (".tsv", touchstone_table),
}
