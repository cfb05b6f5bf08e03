"""A model that answers from a predictions file, so outputs made elsewhere can be scored.

Accepted layouts, detected per record:
- evalkit's own `samples/<task>.jsonl` (`sample_id`, `output`): `replay:results/run/samples`
  re-scores a previous run;
- Qwen-VL eval_mm result files (a JSON list): VQA-style `{"question_id"|"questionId", "answer"}`,
  SEED-Bench `{"question_id", "prediction": letter}`, MMBench `{"index", "prediction": option index}`,
  captions `{"image_id", "caption"}`, grounding `{"answer", "gt_bbox", "hw"}` (no id: matched by
  order, as eval_mm writes them in dataset order);
- lmms-eval `--log_samples` jsonl (`doc_id`, `resps` / `filtered_resps`): matched by `doc_id`,
  the row index in the unfiltered hub split (`Request.row`: a task that keeps only some rows,
  like chartqa_test_augmented, still finds each of its rows under lmms-eval's number).
PATH is one file (used for every task) or a directory holding `<task>.jsonl` / `<task>.json`
(or lmms-eval's `*_<task>.jsonl` / `<task>_*.jsonl`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.models.base import ModelError
from evalkit.task import ChoiceScore, Request

_ID_KEYS = ("sample_id", "question_id", "questionId", "image_id", "id", "index")  # index: eval_mm mmbench
_TEXT_KEYS = ("output", "answer", "caption", "text", "prediction", "pred", "response")


class MissingPrediction(EvalkitError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class PredictionTable:
    by_id: dict[str, str] = field(default_factory=dict)
    by_index: dict[int, str] = field(default_factory=dict)
    by_doc_id: dict[int, str] = field(default_factory=dict)
    source: str = ""

    def lookup(self, request: Request) -> str:
        if request.sample_id in self.by_id:
            return self.by_id[request.sample_id]
        if self.by_doc_id:
            row = request.row if request.row >= 0 else request.index
            if row in self.by_doc_id:
                return self.by_doc_id[row]
        elif request.index in self.by_index:
            return self.by_index[request.index]
        raise MissingPrediction(f"no prediction for sample {request.sample_id} in {self.source}")


def read_records(path: Path) -> list[dict[str, Any]]:
    """A JSON list, a JSON object wrapping one (`logs` / `samples`), or JSON lines."""
    text = path.read_text(encoding="utf-8")
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ModelError(f"replay: {path} is neither JSON nor JSON lines: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("logs") or data.get("samples") or [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ModelError(f"replay: {path} must hold a list of prediction records")
    return data


def _record_text(record: dict[str, Any]) -> str | None:
    if "filtered_resps" in record or "resps" in record:  # lmms-eval
        resp = record.get("filtered_resps") or record.get("resps")
        while isinstance(resp, list) and resp:
            resp = resp[0]
        return resp if isinstance(resp, str) else None
    for key in _TEXT_KEYS:
        value = record.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):  # eval_mm mmbench: the option index
            return str(value)
    return None


def build_table(path: Path) -> PredictionTable:
    table = PredictionTable(source=str(path))
    for position, record in enumerate(read_records(path)):
        text = _record_text(record)
        if text is None:
            continue
        if "doc_id" in record:
            table.by_doc_id[int(record["doc_id"])] = text
            continue
        key = next((k for k in _ID_KEYS if k in record), None)
        if key is None:
            table.by_index[position] = text
        else:
            table.by_id[str(record[key])] = text
    return table


class ReplayModel:
    name = "replay"
    prompt_style = "base"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise ModelError(f"replay: predictions path not found: {self.path}")
        self._tables: dict[str, PredictionTable] = {}

    @classmethod
    def from_spec(cls, path: str, **_: Any) -> ReplayModel:
        return cls(path)

    def _file_for(self, task: str) -> Path:
        if self.path.is_file():
            return self.path
        for pattern in (f"{task}.jsonl", f"{task}.json", f"*_{task}.jsonl", f"{task}_*.jsonl", f"*{task}*.json"):
            found = sorted(self.path.glob(pattern))
            if found:
                return found[0]
        raise MissingPrediction(f"replay: no predictions file for task {task} in {self.path}")

    def _table(self, task: str) -> PredictionTable:
        if task not in self._tables:
            self._tables[task] = build_table(self._file_for(task))
        return self._tables[task]

    def identity(self) -> dict[str, Any]:
        files = [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.read_bytes())
        return {"name": self.name, "path": str(self.path.resolve()), "sha256": digest.hexdigest()}

    def generate(self, requests: list[Request]) -> list[str]:
        return [self._table(r.task).lookup(r) for r in requests]

    def loglikelihood(self, requests: list[Request]) -> list[list[ChoiceScore]]:
        """A replayed choice: the recorded letter (or option index) gets log-probability 0, others -inf-like."""
        out = []
        for r in requests:
            answer = self._table(r.task).lookup(r).strip()
            letters = [c.strip() for c in r.choices or []]
            chosen = letters.index(answer[:1].upper()) if answer[:1].upper() in letters else (
                int(answer) if answer.isdigit() and int(answer) < len(letters) else -1)
            out.append([ChoiceScore(0.0 if i == chosen else -1e9, 1) for i in range(len(letters))])
        return out
