"""Caption datasets in their original files: COCO-style caption json and Karpathy's split files.

The paper's caption splits are not on the hub in the right form: the Flickr30K repos hold all
31,784 images, not Karpathy's 1,000-image test split, and the COCO repos hold the official
val2014 set, not Karpathy's 5,000-image test split. These adapters read the files the splits
are defined by. Each row is one image with all of its reference captions:
`{image_id, image, captions, width?, height?}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalkit.data.loader import DatasetError, register_adapter
from evalkit.task import DatasetSpec


def read_json(path: str | None, what: str) -> Any:
    if not path:
        raise DatasetError(f"{what}: no file given (dataset.path or dataset.options)")
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{what}: file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{what}: {path} is not valid JSON: {exc}") from exc


@register_adapter("coco_captions")
def coco_caption_rows(ds: DatasetSpec) -> Iterator[dict[str, Any]]:
    """COCO caption annotations (`{"images": [...], "annotations": [{image_id, caption}]}`).

    Reads the official files (COCO captions_*.json, nocaps_val_4500_captions.json: images carry
    `file_name`) and eval_mm's converted files (flickr30k_karpathy_test.json: images carry
    `image`, a path). Images keep the file's order, which is eval_mm's sample order.
    """
    data = read_json(ds.path, "coco_captions")
    captions: dict[Any, list[str]] = {}
    for ann in data.get("annotations", []):
        captions.setdefault(ann["image_id"], []).append(ann["caption"])
    for image in data["images"]:
        row = {
            "image_id": image["id"],
            "image": image.get("file_name") or image.get("image"),
            "captions": captions.get(image["id"], []),
        }
        row.update({k: image[k] for k in ("width", "height", "domain", "open_images_id") if k in image})
        yield row


@register_adapter("karpathy")
def karpathy_rows(ds: DatasetSpec) -> Iterator[dict[str, Any]]:
    """Karpathy's `dataset_coco.json` / `dataset_flickr30k.json`, only the images of `ds.split`.

    COCO entries carry `filepath` (train2014 / val2014) and `cocoid`; Flickr30K entries only a
    file name and `imgid`. `restval` images are training images and never part of `test`.
    """
    data = read_json(ds.path, "karpathy")
    found = False
    for image in data["images"]:
        if image["split"] != ds.split:
            continue
        found = True
        name = image["filename"]
        yield {
            "image_id": image.get("cocoid", image["imgid"]),
            "image": f"{image['filepath']}/{name}" if image.get("filepath") else name,
            "captions": [s["raw"].strip() for s in image["sentences"]],
        }
    if not found:
        raise DatasetError(f"karpathy: no images with split {ds.split!r} in {ds.path}")
