"""RefCOCO / RefCOCO+ / RefCOCOg: from the original refer files (`refcoco`) or the hub copies (`refcoco_hub`).

`refcoco`: the original `refs(unc).p` / `refs(umd).p` + `instances.json`.

One row per referring expression (sentence), as eval_mm evaluates them: `{sent_id, ref_id, ann_id,
sentence, bbox, width, height, image}`. The gold box is the referred annotation's COCO bbox
`[x, y, w, h]` turned into pixel corners `[x1, y1, x2, y2]`; width/height come from the
instances file, so predicted boxes on Qwen-VL's 0..999 grid can be scaled back to pixels
(https://github.com/lichengunc/refer, data/refcoco{,+,g}.zip; the files eval_mm's jsonl were made from).

`refcoco_hub`: the hub copies (lmms-lab-encoder/RefCOCO, RefCOCOplus, RefCOCOg; formerly lmms-lab/...)
hold one row per referred object: `question_id` (the annotation id), the image embedded, `answer` =
the object's expressions, `bbox` = COCO [x, y, w, h], no image size. Rows are expanded to the same
rows as above, one per expression (id `<question_id>_<k>`), with width/height read from the image.

The refs files are Python pickles, so they are read with `SafeUnpickler`: the real files hold
only dicts, lists, strings and numbers, and a pickle that asks for any global (the way a pickle
runs code) is refused.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from evalkit.data.captions import read_json
from evalkit.data.loader import DatasetError, _hf_rows, register_adapter
from evalkit.task import DatasetSpec


def xywh_to_xyxy(box: list[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y + h]


class SafeUnpickler(pickle.Unpickler):
    """Builtin containers and scalars only: those need no global, so every global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it asks for {module}.{name}")


def read_refs(path: str | None) -> list[dict[str, Any]]:
    if not path or not Path(path).exists():
        raise DatasetError(f"refcoco: refs file not found: {path} (get it from the refer repo's data zips)")
    with open(path, "rb") as f:
        try:
            refs = SafeUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise DatasetError(f"refcoco: refused {path}: not a plain-data refs pickle ({exc}); "
                               "only dicts, lists, strings and numbers are loaded") from exc
    if not isinstance(refs, list):
        raise DatasetError(f"refcoco: {path} holds a {type(refs).__name__}, not the list of refs")
    return refs


@register_adapter("refcoco")
def refcoco_rows(ds: DatasetSpec) -> Iterator[dict[str, Any]]:
    refs = read_refs(ds.options.get("refs_file"))
    instances = read_json(ds.options.get("instances_file"), "refcoco instances")
    images = {im["id"]: im for im in instances["images"]}
    boxes = {ann["id"]: ann["bbox"] for ann in instances["annotations"]}
    found = False
    for ref in refs:
        if ref["split"] != ds.split:
            continue
        found = True
        image = images[ref["image_id"]]
        bbox = xywh_to_xyxy(boxes[ref["ann_id"]])
        for sent in ref["sentences"]:
            yield {
                "sent_id": sent["sent_id"],
                "ref_id": ref["ref_id"],
                "ann_id": ref["ann_id"],
                "image_id": ref["image_id"],
                "sentence": sent["sent"],
                "bbox": bbox,
                "width": image["width"],
                "height": image["height"],
                "image": image["file_name"],
            }
    if not found:
        raise DatasetError(f"refcoco: no refs with split {ds.split!r} in {ds.options.get('refs_file')}")


def image_size(value: Any) -> tuple[int, int]:
    """(width, height) of an embedded hub image ({"bytes", "path"}), from its header only."""
    data = value.get("bytes") if isinstance(value, dict) else None
    source = io.BytesIO(data) if data else (value.get("path") if isinstance(value, dict) else value)
    with Image.open(source) as image:
        return image.size


@register_adapter("refcoco_hub", hub=True)
def refcoco_hub_rows(ds: DatasetSpec) -> Iterator[dict[str, Any]]:
    for row in _hf_rows(replace(ds, format="hf")):
        width, height = image_size(row["image"])
        bbox = xywh_to_xyxy(row["bbox"])
        for k, sentence in enumerate(row["answer"]):
            yield {
                "sent_id": f"{row['question_id']}_{k}",
                "ref_id": row["question_id"],
                "ann_id": row["question_id"],
                "sentence": sentence,
                "bbox": bbox,
                "width": width,
                "height": height,
                "image": row["image"],
            }
