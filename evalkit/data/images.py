"""Turn whatever a dataset stores for an image into a lazy `ImageRef`.

Hub datasets hold `{"bytes": ..., "path": ...}` dicts once decoding is switched off (we switch
it off so a 200k-row split is not decoded up front); original-format datasets hold file names
relative to an image root. Decoding happens later, in the model, one batch at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from evalkit.data.remote import is_url
from evalkit.task import ImageRef


def to_image_ref(value: Any, image_root: str | Path | None = None) -> ImageRef:
    if isinstance(value, ImageRef):
        return value
    if isinstance(value, Image.Image):
        return ImageRef.from_pil(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return ImageRef.from_bytes(value["bytes"])
        if value.get("path"):
            return _path_ref(value["path"], image_root)
    if isinstance(value, bytes | bytearray):
        return ImageRef.from_bytes(bytes(value))
    if isinstance(value, str) and value:
        return _path_ref(value, image_root)
    raise ValueError(f"no image in field value {str(value)[:80]!r}")


def _path_ref(path: str, image_root: str | Path | None) -> ImageRef:
    if is_url(path):
        return ImageRef.from_location(path)
    p = Path(path)
    if not p.is_absolute() and image_root is not None:
        p = Path(image_root) / p
    return ImageRef.from_path(p)
