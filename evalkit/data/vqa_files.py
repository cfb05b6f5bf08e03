"""VQA-family datasets in their original files, as rows in the matching hub repo's schema.

Used where the hub lacks a split the paper needs (the train splits few-shot demonstrations come
from) or for users who already hold the official files. Rows carry the same columns as the
corresponding lmms-lab repo, so a task's one field mapping serves both sources:
- `vqa_json`: VQAv2 / OK-VQA question + annotation json pair (annotations optional: test splits);
  `answers` stays the official list of dicts, or plain strings with `answers: strings` (OK-VQA's
  hub layout);
- `textvqa_json`: TextVQA_0.5.1_{train,val}.json (`data` list; answers are strings);
- `vizwiz_json`: VizWiz Annotations/{train,val,test}.json (a list; the image name is the id);
- `ocrvqa_json`: OCR-VQA's dataset.json (one entry per book cover holding all its questions; no
  hub repo has the paper's test split in this shape), one row per question.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalkit.data.captions import read_json
from evalkit.data.loader import PATH_ALTERNATIVES, DatasetError, register_adapter
from evalkit.task import DatasetSpec


@register_adapter("vqa_json")
def vqa_json_rows(ds: DatasetSpec) -> Iterator[dict[str, Any]]:
    opts = ds.options
    questions = read_json(opts.get("questions_file"), "vqa_json questions")["questions"]
    annotations: dict[int, dict[str, Any]] = {}
    if opts.get("annotations_file"):
        for ann in read_json(opts["annotations_file"], "vqa_json annotations")["annotations"]:
            annotations[ann["question_id"]] = ann
    template = opts.get("image_template", "COCO_val2014_{image_id:012d}.jpg")
    for q in questions:
        row: dict[str, Any] = dict(annotations.get(q["question_id"], {}))
        row.update(q)
        row["image"] = template.format(image_id=q["image_id"])
        if "answers" in row and opts.get("answers") == "strings":
            row["answers"] = [a["answer"] for a in row["answers"]]
        yield row


@register_adapter("textvqa_json")
def textvqa_json_rows(ds: DatasetSpec) -> Iterator[dict[str, Any]]:
    for item in read_json(ds.path, "textvqa_json")["data"]:
        yield {**item, "image": f"{item['image_id']}.jpg"}


def vizwiz_annotations(path: str | None) -> list[str]:
    """Where a VizWiz annotation file is looked for: the official layout (`Annotations/<split>.json`, as
    the Annotations.zip archive unpacks), then the same file one level up (`vizwiz/<split>.json`)."""
    if not path:
        return []
    p = Path(path)
    other = p.parent.parent / p.name if p.parent.name == "Annotations" else p.parent / "Annotations" / p.name
    return [str(p), str(other)]


PATH_ALTERNATIVES["vizwiz_json"] = vizwiz_annotations


@register_adapter("vizwiz_json")
def vizwiz_json_rows(ds: DatasetSpec) -> Iterator[dict[str, Any]]:
    candidates = vizwiz_annotations(ds.path)
    path = next((c for c in candidates if Path(c).is_file()), None)
    if path is None and candidates:
        raise DatasetError(f"vizwiz_json: annotation file not found; looked for {' and '.join(candidates)}")
    for item in read_json(path, "vizwiz_json"):
        yield {
            "question_id": Path(item["image"]).stem,
            "image": item["image"],
            "question": item["question"],
            "answers": [a["answer"] for a in item.get("answers", [])],
            "category": item.get("answer_type"),
        }


OCRVQA_SPLITS = {"train": 1, "val": 2, "test": 3}  # dataset.json's `split` codes


@register_adapter("ocrvqa_json")
def ocrvqa_json_rows(ds: DatasetSpec) -> Iterator[dict[str, Any]]:
    """Images are named as the official downloader saves them: `<image id><extension of imageURL>`."""
    code = OCRVQA_SPLITS[ds.split]
    for image_id, item in read_json(ds.path, "ocrvqa_json").items():
        if item["split"] != code:
            continue
        ext = Path(item["imageURL"]).suffix or ".jpg"
        for i, (question, answer) in enumerate(zip(item["questions"], item["answers"])):
            yield {
                "question_id": f"{image_id}_{i}",
                "image_id": image_id,
                "image": f"{image_id}{ext}",
                "question": question,
                "answers": [answer],
                "genre": item.get("genre"),
            }
