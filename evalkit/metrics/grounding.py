"""Referring-expression grounding (RefCOCO/+/g): Acc@IoU>=0.5 of one predicted box per expression.

The default rule ("qwen") is exactly QwenLM/Qwen-VL eval_mm/evaluate_grounding.py
@ 10cb904198d4e0e161d0f9f36ba9fac8ac7899e4, strictness included, because the paper's numbers depend on it:
only the first "(x1,y1),(x2,y2)" of the raw text counts (a space between the pairs is unparseable, which the
script scores as the box (0, 0, 0, 0)), coordinates in 0..999 are scaled in float32 as its torch tensors are,
and IoU is torchvision's (no +1, unclamped areas, so swapped corners give 0). The script's
``drop_last=True`` skips a partial last batch: a sampling artefact, not part of the metric, not reproduced.

"lenient" is a parser for other models' formats, not used for the paper's numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evalkit.metrics.base import MetricResult, answers_of, check_option, mean_result, register_metric
from evalkit.task import Prediction, Sample

Box = tuple[float, float, float, float]

_QWEN_PAIRS = re.compile(r"\((.*?)\),\((.*?)\)")
_QWEN_SCALE = 999
_NUM = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
_LENIENT_PAIRS = re.compile(rf"\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*,?\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)")
_LENIENT_FOUR = re.compile(rf"[\[(]\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*[\])]")


def _scale_999(coords: Sequence[float], width: float, height: float) -> Box:
    """x / 999 * w, y / 999 * h with the script's float32 arithmetic (exact float32 values as Python floats)."""
    with np.errstate(all="ignore"):  # huge numbers overflow to inf in float32, as in torch
        c = np.asarray(coords, dtype=np.float32) / np.float32(_QWEN_SCALE)
        c *= np.array([width, height, width, height], dtype=np.float32)
    return (float(c[0]), float(c[1]), float(c[2]), float(c[3]))


def parse_box(text: str, width: float, height: float) -> Box | None:
    """Qwen-VL's rule: the first "(x1,y1),(x2,y2)" in 0..999, scaled to pixels; None when unparseable."""
    match = _QWEN_PAIRS.search(text)
    if match is None:
        return None
    first, second = match.groups()
    if "," not in first or "," not in second:
        return None
    try:
        x1, y1 = (float(v) for v in first.split(","))
        x2, y2 = (float(v) for v in second.split(","))
    except ValueError:  # not a number, or not exactly two parts
        return None
    return _scale_999((x1, y1, x2, y2), width, height)


def parse_box_lenient(text: str, width: float, height: float) -> Box | None:
    """Qwen pairs with any spacing, else four numbers in brackets (pixels, or 0..1); ordered and clipped."""
    if match := _LENIENT_PAIRS.search(text):
        box = _scale_999([float(v) for v in match.groups()], width, height)
    elif match := _LENIENT_FOUR.search(text):
        values = [float(v) for v in match.groups()]
        if all(0.0 <= v <= 1.0 for v in values):
            values = [values[0] * width, values[1] * height, values[2] * width, values[3] * height]
        box = (values[0], values[1], values[2], values[3])
    else:
        return None
    if not all(math.isfinite(v) for v in box):
        return None
    x1, x2 = sorted((min(max(box[0], 0.0), width), min(max(box[2], 0.0), width)))
    y1, y2 = sorted((min(max(box[1], 0.0), height), min(max(box[3], 0.0), height)))
    return (x1, y1, x2, y2)


PARSERS: dict[str, Callable[[str, float, float], Box | None]] = {"qwen": parse_box, "lenient": parse_box_lenient}


def iou(a: Sequence[float], b: Sequence[float], dtype: type = np.float64) -> float:
    """torchvision box_iou for one pair ([x1, y1, x2, y2], no +1, unclamped areas); NaN when the union is 0."""
    with np.errstate(all="ignore"):  # inf/NaN coordinates give NaN, as in torch
        p = np.asarray(a, dtype=dtype)
        g = np.asarray(b, dtype=dtype)
        area_p = (p[2] - p[0]) * (p[3] - p[1])
        area_g = (g[2] - g[0]) * (g[3] - g[1])
        w = max(min(p[2], g[2]) - max(p[0], g[0]), dtype(0))
        h = max(min(p[3], g[3]) - max(p[1], g[1]), dtype(0))
        inter = w * h
        return float(inter / (area_p + area_g - inter))


@register_metric("grounding_accuracy")
def grounding_accuracy(
    predictions: list[Prediction], samples: list[Sample], parser: str = "qwen", threshold: float = 0.5
) -> MetricResult:
    """Task adapter: ``references`` = gold [x1, y1, x2, y2] in pixels, ``metadata`` width/height.

    Per-sample keys ``grounding_accuracy`` (0/1) and ``iou`` (0 for unparseable output and NaN IoUs); per-sample
    metadata ``box`` (the parsed box, None when unparseable), ``gt_box``, ``width``, ``height``, in pixels.
    """
    check_option("box parser", parser, sorted(PARSERS))
    parse = PARSERS[parser]
    hits: list[float] = []
    ious: list[float] = []
    boxes: list[dict[str, Any]] = []  # what was compared, in pixels: the report draws these
    unparseable = nan_iou = 0
    for text, sample in zip(answers_of(predictions), samples, strict=True):
        try:
            width, height = float(sample.metadata["width"]), float(sample.metadata["height"])
        except KeyError as exc:
            raise KeyError(f"grounding sample {sample.id!r} has no metadata {exc}; width/height are needed") from exc
        gold = [float(v) for v in sample.references]
        box = parse(text or "", width, height)
        if box is None:
            unparseable += 1
            value = 0.0
        else:
            value = iou(box, gold, dtype=np.float32 if parser == "qwen" else np.float64)
            if math.isnan(value):
                nan_iou += 1
                value = 0.0
        hits.append(float(value >= threshold))
        ious.append(value)
        boxes.append({"box": None if box is None else list(box), "gt_box": gold, "width": width, "height": height})
    info = {"grounding_accuracy": {"parser": parser, "threshold": threshold, "n": len(hits),
                                   "unparseable": unparseable, "nan_iou": nan_iou}}
    result = mean_result("grounding_accuracy", hits, info, iou=ious)
    result.per_sample_metadata = boxes
    return result
