"""Grounding against Qwen-VL's evaluate_grounding.py, run outside the repo.

Expected values: tests/fixtures/provenance/grounding_official.py runs the scoring loop of QwenLM/Qwen-VL eval_mm/evaluate_grounding.py
@ 10cb904198d4e0e161d0f9f36ba9fac8ac7899e4 (its box_iou with torchvision's box_area inlined, torch float32) on
these outputs; the IoU column is its ``iou.item()`` (NaN where it divides 0 by 0; unparseable output became the
box (0, 0, 0, 0)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit.metrics import get_metric
from evalkit.metrics.grounding import iou, parse_box, parse_box_lenient
from evalkit.task import Prediction, Sample

# (decoded output, gold [x1, y1, x2, y2], width, height, official IoU, official correct)
CASES = [
    ('(100,200),(300,400)', [64.064, 96.096, 192.192, 192.192], 640, 480, 0.9999947547912598, True),
    ('<ref>dog</ref><box>(100,200),(300,400)</box>', [60, 90, 200, 200], 640, 480, 0.7995204925537109, True),
    ('(100, 200),(300, 400)', [64, 96, 192, 192], 640, 480, 0.9950122833251953, True),
    ('(100,200), (300,400)', [64, 96, 192, 192], 640, 480, 0.0, False),
    ('(100,200,300),(1,2)', [64, 96, 192, 192], 640, 480, 0.0, False),
    ('(300,400),(100,200)', [64, 96, 192, 192], 640, 480, 0.0, False),
    ('(abc,def),(1,2)', [0, 0, 1, 1], 640, 480, 0.0, False),
    ('', [0, 0, 10, 10], 640, 480, 0.0, False),
    ('(0,0),(999,999)', [0, 0, 640, 480], 640, 480, 1.0, True),
    ('(1e2,2e2),(3e2,4e2)', [64, 96, 192, 192], 640, 480, 0.9950122833251953, True),
    ('(nan,0),(999,999)', [0, 0, 640, 480], 640, 480, math.nan, False),
    ('(0,0),(0,0)', [10, 10, 10, 10], 640, 480, math.nan, False),
    ('(1200,1300),(1500,1600)', [0, 0, 640, 480], 640, 480, 0.0, False),
    ('(-50,-50),(500,500)', [0, 0, 320, 240], 640, 480, 0.8247942924499512, True),
    ('(0,0),(500,500)<box>(600,600),(999,999)</box>', [0, 0, 320, 240], 640, 480, 0.9980010390281677, True),
    ('((100,200),(300,400))', [64, 96, 192, 192], 640, 480, 0.0, False),
    ('(0,0),(707,707)', [0, 0, 500, 500], 999, 999, 0.5001510381698608, True),
    ('(0,0),(706,706)', [0, 0, 499.5, 499.5], 999, 999, 0.5005662441253662, True),
    ('(10,10),(500,500)', [5, 5, 5, 5], 1000, 1000, 0.0, False),
    ('(100,200),(300,400) (0,0),(1,1)', [64, 96, 192, 192], 777, 333, 0.23182986676692963, False),
]


@pytest.mark.parametrize(("text", "gold", "width", "height", "official_iou", "correct"), CASES)
def test_matches_evaluate_grounding(text, gold, width, height, official_iou, correct):
    box = parse_box(text, width, height)
    value = 0.0 if box is None else iou(box, gold, dtype=np.float32)
    if math.isnan(official_iou):
        assert math.isnan(value) or box is None
    else:
        assert value == official_iou  # bit-exact: same float32 arithmetic
    result = get_metric("grounding_accuracy")(
        [Prediction(sample_id="s", task="t", output=text)],
        [Sample(id="s", images=[], fields={}, references=gold, metadata={"width": width, "height": height})],
    )
    assert result.per_sample[0]["grounding_accuracy"] == float(correct)
    assert not math.isnan(result.per_sample[0]["iou"])


def test_iou_torchvision_style():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)  # no +1 on widths
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((10, 10, 0, 0), (0, 0, 10, 10)) == 0.0  # swapped corners never overlap
    assert math.isnan(iou((0, 0, 0, 0), (5, 5, 5, 5)))  # zero-area both: 0 / 0


def test_parse_box_default_rule():
    assert parse_box("<box>(0,0),(999,999)</box>", 640, 480) == (0.0, 0.0, 640.0, 480.0)
    assert parse_box("(100,200), (300,400)", 640, 480) is None
    assert parse_box("((1,2),(3,4))", 640, 480) is None
    assert parse_box("(1,2)\n,(3,4)", 640, 480) is None
    assert parse_box("", 640, 480) is None


def test_lenient_parser_formats():
    assert parse_box_lenient("[10, 20, 110, 220]", 640, 480) == (10.0, 20.0, 110.0, 220.0)
    assert parse_box_lenient("[0.5, 0.5, 0.25, 0.25]", 200, 100) == (50.0, 25.0, 100.0, 50.0)  # 0..1, swapped
    assert parse_box_lenient("( 0 , 0 ) , ( 999 , 999 )", 640, 480) == (0.0, 0.0, 640.0, 480.0)
    assert parse_box_lenient("box: (-5, -5, 9000, 9000)", 640, 480) == (0.0, 0.0, 640.0, 480.0)  # clipped
    assert parse_box_lenient("no box here", 640, 480) is None
    assert parse_box_lenient("[1e999, 0, 1, 1]", 640, 480) is None


def test_adapter_counts_unparseable_and_lenient_option():
    samples = [
        Sample(id=str(i), images=[], fields={}, references=[0, 0, 100, 100], metadata={"width": 100, "height": 100})
        for i in range(3)
    ]
    outputs = ["(0,0),(999,999)", "[0, 0, 100, 100]", "I cannot see it"]
    preds = [Prediction(sample_id=str(i), task="t", output=o) for i, o in enumerate(outputs)]
    qwen = get_metric("grounding_accuracy")(preds, samples)
    assert [s["grounding_accuracy"] for s in qwen.per_sample] == [1.0, 0.0, 0.0]
    assert qwen.info["grounding_accuracy"]["unparseable"] == 2
    assert qwen.aggregate["grounding_accuracy"] == pytest.approx(1 / 3)
    lenient = get_metric("grounding_accuracy")(preds, samples, parser="lenient")
    assert [s["grounding_accuracy"] for s in lenient.per_sample] == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="parser"):
        get_metric("grounding_accuracy")(preds, samples, parser="yolo")
    with pytest.raises(KeyError, match="width"):
        get_metric("grounding_accuracy")(preds, [Sample(id="x", images=[], fields={}, references=[0, 0, 1, 1])] * 3)


coords = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2000, 3000)
box_text = st.one_of(
    st.text(max_size=80),
    st.builds(lambda a, b, c, d, sep: f"({a}{sep}{b}),({c}{sep}{d})", coords, coords, coords, coords,
              st.sampled_from([",", ", ", " ,", ";"])),
    st.builds(lambda a, b, c, d: f"[{a}, {b}, {c}, {d}]", coords, coords, coords, coords),
)


@settings(max_examples=400, deadline=None)
@given(text=box_text, width=st.integers(1, 5000), height=st.integers(1, 5000))
def test_property_parsers_never_raise_and_iou_in_unit_interval(text, width, height):
    gold = (0.0, 0.0, width / 2, height / 2)
    for parse in (parse_box, parse_box_lenient):
        box = parse(text, width, height)
        assert box is None or len(box) == 4
        if box is not None:
            value = iou(box, gold, dtype=np.float32 if parse is parse_box else np.float64)
            assert math.isnan(value) or 0.0 <= value <= 1.0
    lenient = parse_box_lenient(text, width, height)
    if lenient is not None:
        x1, y1, x2, y2 = lenient
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
        assert 0.0 <= iou(lenient, gold) <= 1.0


def _evaluate_grounding_ious(boxes: list[tuple[int, int, int, int]], golds: list[list[float]],
                             sizes: list[tuple[int, int]]) -> list[float]:
    """The scoring lines of QwenLM/Qwen-VL eval_mm/evaluate_grounding.py @ 10cb904 run with torch, one row per
    output (the script's own dtype and op order: float32 tensor / 999, then *= w and *= h, then box_iou with
    torchvision's box_area inlined; element-wise, so rows do not interact)."""
    import torch

    target = torch.tensor(golds, dtype=torch.float32).view(-1, 4)
    box = torch.tensor(boxes, dtype=torch.float32).view(-1, 4) / 999
    size = torch.tensor(sizes)
    box[:, 0::2] *= size[:, :1]
    box[:, 1::2] *= size[:, 1:]
    area1 = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    area2 = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    lt = torch.max(box[:, :2], target[:, :2])
    rb = torch.min(box[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    return (inter / (area1 + area2 - inter)).tolist()


def test_float32_box_scaling_matches_the_script_bit_for_bit():
    # In float64 the scaled corners differ from the script's float32 ones in about a third of random boxes,
    # and so does the IoU; the paper's numbers come from the float32 arithmetic.
    rng = np.random.default_rng(21)
    boxes, golds, sizes = [], [], []
    for _ in range(300):
        x1, y1 = (int(v) for v in rng.integers(0, 500, size=2))
        boxes.append((x1, y1, int(rng.integers(x1 + 1, 1000)), int(rng.integers(y1 + 1, 1000))))
        w, h = (int(v) for v in rng.integers(50, 2000, size=2))
        sizes.append((w, h))
        golds.append([float(rng.uniform(0, w / 2)), float(rng.uniform(0, h / 2)), float(rng.uniform(w / 2, w)),
                      float(rng.uniform(h / 2, h))])
    expected = _evaluate_grounding_ious(boxes, golds, sizes)
    texts = [f"<box>({x1},{y1}),({x2},{y2})</box>" for x1, y1, x2, y2 in boxes]
    samples = [Sample(id=str(i), images=[], fields={}, references=g, metadata={"width": w, "height": h})
               for i, (g, (w, h)) in enumerate(zip(golds, sizes))]
    result = get_metric("grounding_accuracy")(
        [Prediction(sample_id=str(i), task="t", output=t) for i, t in enumerate(texts)], samples)
    assert [s["iou"] for s in result.per_sample] == expected
    assert [s["grounding_accuracy"] for s in result.per_sample] == [float(v >= 0.5) for v in expected]
    assert 0 < sum(v >= 0.5 for v in expected) < len(expected)


def test_overflow_and_nan_boxes_raise_no_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning per sample would flood a 10k-sample run's log
        assert parse_box("(1e39,0),(999,999)", 640, 480)[0] == math.inf
        assert math.isnan(iou((0, 0, 0, 0), (5, 5, 5, 5)))
        assert math.isnan(iou((math.inf, 0, math.inf, 1), (0, 0, 1, 1)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[0, 0, 0.5, 0.5]", (0.0, 0.0, 100.0, 50.0)),  # 0 is within 0..1: relative
        ("[0.25, 0.5, 1, 1]", (50.0, 50.0, 200.0, 100.0)),  # 1 is within 0..1: relative
        ("[0.1, 0.2, 0.3, 0.4]", (20.0, 20.0, 60.0, 40.0)),  # x by width, y by height, each its own value
        ("[0.5, 0.5, 1.5, 1.5]", (0.5, 0.5, 1.5, 1.5)),  # one value above 1: pixels
        ("[-20, 10, -10, 20]", (0.0, 10.0, 0.0, 20.0)),  # left of the image: both x clipped to 0
        ("[10, -20, 20, -10]", (10.0, 0.0, 20.0, 0.0)),  # above the image: both y clipped to 0
    ],
)
def test_lenient_relative_coordinates_and_clipping(text, expected):
    assert parse_box_lenient(text, 200, 100) == pytest.approx(expected)
