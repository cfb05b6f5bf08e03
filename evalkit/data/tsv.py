"""`opencompass_tsv`: the benchmark TSV files of the OpenCompass family (MMBench, TouchStone).

One row per question, images embedded as base64 in an `image` column. The rows keep the file's
columns, which are the hub copies' columns, so the same `dataset.options` reshaping steps
(`evalkit.data.hub.reshape`) and the same field mapping serve both routes. The file is read with
`pandas.read_csv(sep="\\t")` and pandas' default NaN handling, exactly as Qwen-VL's
eval_mm/mmbench scripts and TouchStone's eval.py read it (an empty cell, and also an option
whose text is "None" or "NA", reads as NaN: the official scripts drop such options too).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalkit.data.hub import reshape
from evalkit.data.loader import DatasetError, register_adapter
from evalkit.task import DatasetSpec


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return {"bytes": base64.b64decode(value, validate=True), "path": None}
    except (binascii.Error, ValueError):
        return value  # not base64: a path, resolved against the image root like any other


@register_adapter("opencompass_tsv")
def opencompass_tsv_rows(ds: DatasetSpec) -> Iterator[dict[str, Any]]:
    import pandas as pd

    if not ds.path or not Path(ds.path).is_file():
        raise DatasetError(f"opencompass_tsv: file not found: {ds.path}")
    frame = pd.read_csv(ds.path, sep="\t")
    image_columns = ds.options.get("image_columns", ["image"])
    for record in frame.to_dict(orient="records"):
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}  # numpy -> python
        for column in image_columns:
            if column in row:
                row[column] = _decode(row[column])
        yield reshape(row, ds.options)
