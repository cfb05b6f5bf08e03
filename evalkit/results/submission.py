"""Submission files for private-answer splits, in each evaluation server's own format.

VQAv2 test-dev (EvalAI, VQA Challenge), VizWiz test-dev (EvalAI, VizWiz VQA) and DocVQA test
(rrc.cvc.uab.es, DocVQA Task 1) keep their answers private: a run writes the file the server
takes instead of a score. The answer written is the post-processed one (eval_mm strips its
outputs), the same text a public split would score. MMBench test (OpenCompass server) and
TouchStone (a GPT-4 judge) take tables: `evalkit.results.submission_tables` writes those.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from evalkit.results.runs import atomic_write_json
from evalkit.task import Prediction, Sample

Record = Callable[[Prediction, Sample], dict[str, Any]]


def _answer(pred: Prediction) -> str:
    return pred.answer if isinstance(pred.answer, str) else pred.output


def _vqav2(pred: Prediction, sample: Sample) -> dict[str, Any]:
    return {"question_id": int(sample.id), "answer": _answer(pred)}


def _vizwiz(pred: Prediction, sample: Sample) -> dict[str, Any]:
    name = str(sample.metadata.get("image_name") or sample.id)
    return {"image": name if "." in name else f"{name}.jpg", "answer": _answer(pred)}


def _docvqa(pred: Prediction, sample: Sample) -> dict[str, Any]:
    return {"questionId": int(sample.id), "answer": _answer(pred)}


WRITERS: dict[str, Record] = {"vqav2": _vqav2, "vizwiz": _vizwiz, "docvqa": _docvqa}
# Where each file goes: printed in the run summary and stored in run.json beside the file.
SERVERS: dict[str, str] = {
    "vqav2": "the VQA Challenge on EvalAI (eval.ai, test-dev phase)",
    "vizwiz": "the VizWiz-VQA challenge on EvalAI (eval.ai, test-dev phase)",
    "docvqa": "the Robust Reading Competition site (rrc.cvc.uab.es, DocVQA Task 1)",
    "mmbench": "the MMBench evaluation server (OpenCompass; it takes .xlsx: save this table with pandas to_excel)",
    "touchstone": "TouchStone's GPT-4 judge: python eval.py FILE $OPENAI_API_KEY --model-name NAME "
                  "(github.com/OFA-Sys/TouchStone; a paid API call evalkit never makes)",
}


def submission_suffix(kind: str) -> str:
    """The file extension the `kind` server takes."""
    from evalkit.results.submission_tables import TABLES

    return TABLES[kind][0] if kind in TABLES else ".json"


def write_submission(kind: str, predictions: list[Prediction], samples: list[Sample], path: Path) -> None:
    """Write `predictions` (aligned with `samples`) as the `kind` server's file, atomically."""
    from evalkit.results.submission_tables import TABLES

    if kind in TABLES:
        TABLES[kind][1](predictions, samples, path)
        return
    if kind not in WRITERS:
        raise ValueError(f"unknown submission kind {kind!r}; known: {', '.join(sorted([*WRITERS, *TABLES]))}")
    by_id = {s.id: s for s in samples}
    record = WRITERS[kind]
    atomic_write_json(path, [record(p, by_id[p.sample_id]) for p in predictions])

