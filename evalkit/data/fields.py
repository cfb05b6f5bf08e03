"""Map a dataset row onto a `Sample` through the task spec's field mapping.

A mapping value is a column name, a dotted path into nested dicts (`meta.width`), or a
list projection (`answers[].answer` takes `answer` from each dict of the `answers` list —
the lmms-lab VQAv2 layout). Keys `id`, `image`/`images` and `references` fill the Sample's
own slots; `meta.<name>` keys go to metadata; everything else is a prompt field.
"""

from __future__ import annotations

from typing import Any

from evalkit.data.images import to_image_ref
from evalkit.errors import EvalkitError
from evalkit.task import Sample


class FieldError(EvalkitError, KeyError):
    """A mapped column that the row does not have."""


def extract(row: dict[str, Any], path: str) -> Any:
    """Follow `path` into `row` (see module docstring for the syntax)."""
    if path.startswith("="):  # a constant, e.g. "=N/A"
        return path[1:]
    head, sep, rest = path.partition(".")
    if head.endswith("[]"):
        items = _get(row, head[:-2], path)
        if items is None:  # a test split without answers: nothing to project
            return None
        if not rest:
            return list(items)
        return [extract(item, rest) for item in items]
    value = _get(row, head, path)
    return extract(value, rest) if sep else value


def _get(row: Any, key: str, path: str) -> Any:
    if not isinstance(row, dict) or key not in row:
        have = ", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__
        raise FieldError(f"field {path!r}: no {key!r} in row (has: {have})")
    return row[key]


def row_to_sample(row: dict[str, Any], fields: dict[str, str], index: int, image_root: str | None) -> Sample:
    images: list = []
    text: dict[str, Any] = {}
    metadata: dict[str, Any] = {"index": index}
    sample_id: Any = index
    references: Any = None
    for key, path in fields.items():
        value = extract(row, path)
        if key == "id":
            sample_id = value
        elif key == "image":
            images = [to_image_ref(value, image_root)]
        elif key == "images":
            images = [to_image_ref(v, image_root) for v in value]
        elif key == "references":
            references = value
        elif key.startswith("meta."):
            metadata[key[5:]] = value
        else:
            text[key] = value
    return Sample(id=str(sample_id), images=images, fields=text, references=references, metadata=metadata)
