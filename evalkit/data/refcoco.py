"""RefCOCO / RefCOCO+ / RefCOCOg from the original `refs(unc).p` / `refs(umd).p` + `instances.json`.

One row per referring expression (sentence), as eval_mm evaluates them: `{sent_id, ref_id, ann_id,
sentence, bbox, width, height, image}`. The gold box is the referred annotation's COCO bbox
`[x, y, w, h]` turned into pixel corners `[x1, y1, x2, y2]`; width/height come from the
instances file, so predicted boxes on Qwen-VL's 0..999 grid can be scaled back to pixels. The
hub copies (lmms-lab-encoder/RefCOCO...) hold one row per object with its sentences in a list
and no image size, so this adapter reads the files the splits are defined by
(https://github.com/lichengunc/refer, data/refcoco{,+,g}.zip).

The refs files are Python pickles, so they are read with `SafeUnpickler`: the real files hold
only dicts, lists, strings and numbers, and a pickle that asks for any global (the way a pickle
runs code) is refused.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalkit.data.captions import read_json
from evalkit.data.loader import DatasetError, register_adapter
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
