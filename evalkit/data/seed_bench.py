"""SEED-Bench in the two forms Qwen-VL's eval_mm/seed_bench reads, as rows in the hub copy's columns.

- `seed_jsonl`: the input files eval_mm/seed_bench/trans.py writes (`image_input.jsonl`,
  `video_input_4.jsonl`: `{question_id, prompt, answer}`, the prompt holding `<img>PATH</img>\\n`
  per image or frame, then `Question: ...\\nOptions: A. ...\\nB. ...\\nC. ...\\nD. ...\\nAnswer:`).
  The prompt is taken apart into frames, question and options; the evaluation dimension
  (`question_type_id`) is not in these files, so it is joined from SEED-Bench.json when
  `options.seed_json_file` names it (else 0: only the overall accuracy is meaningful).
- `hub` rows (lmms-lab/SEED-Bench: answer, choice_a..d, data_type, question, question_id,
  question_type_id, image = a list of images, the frames for video questions) pass through
  `seed_frames` here, which keeps 4 uniformly spaced frames as trans.py's get_index picks them.
Rows: question_id, images (list), question, choices, answer (letter), question_type_id, data_type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from evalkit.data.captions import read_json
from evalkit.data.hub import hub_rows
from evalkit.data.loader import DatasetError, register_adapter
from evalkit.task import DatasetSpec

_IMG = re.compile(r"<img>(.*?)</img>\n")
_PROMPT = re.compile(r"Question: (.*)\nOptions: (.*)\nAnswer:\Z", re.S)
_OPTION = re.compile(r"(?:^|\n)([A-D])\. ")
DIMENSIONS = {  # SEED-Bench.json question_type: evaluation dimension ids 1-9 image, 10-12 video
    1: "Scene Understanding", 2: "Instance Identity", 3: "Instance Attributes", 4: "Instance Location",
    5: "Instances Counting", 6: "Spatial Relation", 7: "Instance Interaction", 8: "Visual Reasoning",
    9: "Text Understanding", 10: "Action Recognition", 11: "Action Prediction", 12: "Procedure Understanding",
}


def get_index(num_frames: int, num_segments: int) -> list[int]:
    """trans.py's uniform frame sampling (the segment centres of num_segments equal segments)."""
    if num_segments > num_frames:
        return list(range(num_frames))
    seg_size = float(num_frames - 1) / num_segments
    start = int(seg_size / 2)
    return [start + int(round(seg_size * i)) for i in range(num_segments)]


def parse_prompt(prompt: str) -> tuple[list[str], str, list[str]]:
    """(image paths, question, options) of a trans.py prompt; ValueError when it has another shape."""
    images = _IMG.findall(prompt)
    rest = _IMG.sub("", prompt)
    match = _PROMPT.match(rest)
    if not images or not match:
        raise ValueError(f"not a SEED-Bench prompt: {prompt[:80]!r}")
    question, options = match.groups()
    pieces = _OPTION.split("\n" + options)[1:]
    letters, texts = pieces[0::2], pieces[1::2]
    if letters != ["A", "B", "C", "D"][: len(letters)]:
        raise ValueError(f"options not lettered A.. in order: {options[:80]!r}")
    return images, question, texts


def _dimensions(path: str | None) -> dict[str, int]:
    if not path:
        return {}
    return {str(q["question_id"]): int(q["question_type_id"]) for q in read_json(path, "SEED-Bench.json")["questions"]}


@register_adapter("seed_jsonl")
def seed_jsonl_rows(ds: DatasetSpec) -> Iterator[dict[str, Any]]:
    if not ds.path or not Path(ds.path).is_file():
        raise DatasetError(f"seed_jsonl: file not found: {ds.path} (eval_mm/seed_bench/trans.py writes it)")
    dims = _dimensions(ds.options.get("seed_json_file"))
    for number, line in enumerate(Path(ds.path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        qid = str(item["question_id"])
        row: dict[str, Any] = {"question_id": qid, "answer": item.get("answer"), "question_type_id": dims.get(qid, 0)}
        try:
            row["images"], row["question"], row["choices"] = parse_prompt(item["prompt"])
        except ValueError as exc:  # trans.py writes "Error..." prompts for videos it could not decode
            raise DatasetError(f"seed_jsonl: {ds.path}:{number}: {exc}") from None
        row["data_type"] = "video" if len(row["images"]) > 1 else "image"
        yield row


@register_adapter("seed_hub", hub=True)
def seed_hub_rows(ds: DatasetSpec) -> Iterator[dict[str, Any]]:
    """The hub copy, filtered to dimensions `options.dimensions`, video frames cut to `options.frames`."""
    wanted = set(ds.options.get("dimensions") or DIMENSIONS)
    frames = int(ds.options.get("frames", 4))
    for row in hub_rows(replace(ds, options={})):
        if int(row["question_type_id"]) not in wanted:
            continue
        images = list(row["image"])
        if len(images) > frames:  # more frames than the protocol's: trans.py's uniform pick among them
            images = [images[i] for i in get_index(len(images), frames)]
        yield {**row, "images": images, "question_id": str(row["question_id"]),
               "choices": [row[f"choice_{c}"] for c in "abcd"]}
