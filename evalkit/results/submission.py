"""Submission files for private-answer splits, in each evaluation server's own format.

VQAv2 test-dev (EvalAI, VQA Challenge), VizWiz test-dev (EvalAI, VizWiz VQA) and DocVQA test
(rrc.cvc.uab.es, DocVQA Task 1) keep their answers private: a run writes the file the server
takes instead of a score. The answer written is the post-processed one (eval_mm strips its
outputs), the same text a public split would score. Those three take JSON records; two more
take tables (TSV):

- MMBench test (OpenCompass server): Qwen-VL's eval_mm/mmbench/mmbench_predict_to_submission.py
  drops the test TSV's image column, adds `prediction` (a letter) and writes the table; before
  that it makes the rotations of each question agree ("constrained"): the option text predicted
  most often across them (seeded tie-break, see `evalkit.metrics.mmbench.majority`) becomes every
  rotation's answer, as the letter that text has in that rotation. The script saves .xlsx
  (openpyxl); evalkit writes the same table as TSV (no spreadsheet dependency) and the summary
  says to convert it.
- TouchStone (a GPT-4 judge): its eval.py reads a TSV with index, question, human_annotation,
  gpt4_ha_answer, category, task_name (copied from touchstone_20230831.tsv) and `response`, the
  model's answer, all 908 rows; it then asks GPT-4 to judge (a paid API evalkit does not call).

Table rows carry the dataset's text columns in `meta.record` (the `record` reshaping option).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evalkit.metrics.base import answer_text
from evalkit.metrics.choice import picked_index
from evalkit.metrics.mmbench import ROTATION, majority
from evalkit.results.runs import atomic_write_json
from evalkit.task import Prediction, Sample

Record = Callable[[Prediction, Sample], dict[str, Any]]
TableWriter = Callable[[list[Prediction], list[Sample], Path], None]

# Where each file goes: printed in the run summary and stored in run.json beside the file.
SERVERS: dict[str, str] = {
    "vqav2": "the VQA Challenge on EvalAI (eval.ai, test-dev phase)",
    "vizwiz": "the VizWiz-VQA challenge on EvalAI (eval.ai, test-dev phase)",
    "docvqa": "the Robust Reading Competition site (rrc.cvc.uab.es, DocVQA Task 1)",
    "mmbench": "the MMBench evaluation server (OpenCompass; it takes .xlsx: save this table with pandas to_excel)",
    "touchstone": "TouchStone's GPT-4 judge: python eval.py FILE $OPENAI_API_KEY --model-name NAME "
                  "(github.com/OFA-Sys/TouchStone; a paid API call evalkit never makes)",
}


# ---------------------------------------------------------------- JSON records


def _vqav2(pred: Prediction, sample: Sample) -> dict[str, Any]:
    return {"question_id": int(sample.id), "answer": answer_text(pred)}


def _vizwiz(pred: Prediction, sample: Sample) -> dict[str, Any]:
    name = str(sample.metadata.get("image_name") or sample.id)
    return {"image": name if "." in name else f"{name}.jpg", "answer": answer_text(pred)}


def _docvqa(pred: Prediction, sample: Sample) -> dict[str, Any]:
    return {"questionId": int(sample.id), "answer": answer_text(pred)}


WRITERS: dict[str, Record] = {"vqav2": _vqav2, "vizwiz": _vizwiz, "docvqa": _docvqa}


# ---------------------------------------------------------------- tables

TOUCHSTONE_COLUMNS = ["index", "question", "human_annotation", "gpt4_ha_answer", "category", "task_name"]


def _write_tsv(records: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pd.DataFrame.from_records(records, columns=columns).to_csv(tmp, sep="\t", index=False)
    os.replace(tmp, path)


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
        records.append({**{c: record.get(c) for c in TOUCHSTONE_COLUMNS}, "response": answer_text(pred)})
    _write_tsv(records, [*TOUCHSTONE_COLUMNS, "response"], path)


TABLES: dict[str, tuple[str, TableWriter]] = {
    "mmbench": (".tsv", mmbench_table),
    "touchstone": (".tsv", touchstone_table),
}


# ---------------------------------------------------------------- either kind


def submission_suffix(kind: str) -> str:
    """The file extension the `kind` server takes."""
    return TABLES[kind][0] if kind in TABLES else ".json"


def write_submission(kind: str, predictions: list[Prediction], samples: list[Sample], path: Path) -> None:
    """Write `predictions` (aligned with `samples`) as the `kind` server's file, atomically."""
    if kind in TABLES:
        TABLES[kind][1](predictions, samples, path)
        return
    if kind not in WRITERS:
        raise ValueError(f"unknown submission kind {kind!r}; known: {', '.join(sorted([*WRITERS, *TABLES]))}")
    by_id = {s.id: s for s in samples}
    record = WRITERS[kind]
    atomic_write_json(path, [record(p, by_id[p.sample_id]) for p in predictions])
