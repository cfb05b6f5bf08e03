"""The synthetic demo suite: deterministic, disjoint splits, real schemas, shipped files current."""

from __future__ import annotations

import hashlib
import io

import pyarrow.parquet as pq
import pytest
from PIL import Image

from evalkit.data import load_samples
from evalkit.demo import data as demo
from evalkit.demo.vocab import build_vocab
from evalkit.metrics.grounding import iou, parse_box
from evalkit.models.qwen_vl.tokenizer import QwenTokenizer
from evalkit.registry import Registry


def _digest(scene: demo.Scene) -> str:
    return hashlib.sha256(scene.render().tobytes()).hexdigest()


def test_scenes_are_a_pure_function_of_seed_split_index():
    a = demo.make_scene(demo.DEFAULT_SEED, "test", 7)
    b = demo.make_scene(demo.DEFAULT_SEED, "test", 7)
    assert a == b and _digest(a) == _digest(b)
    assert _digest(demo.make_scene(demo.DEFAULT_SEED + 1, "test", 7)) != _digest(a)


def test_splits_share_no_image():
    seen: dict[str, str] = {}
    for split, n in (("train", 600), ("validation", 200), ("test", 100)):
        for i in range(n):
            digest = _digest(demo.make_scene(demo.DEFAULT_SEED, split, i))
            assert seen.setdefault(digest, split) == split, f"{split}[{i}] repeats an image of {seen[digest]}"


def test_scene_invariants():
    """Distinct kinds and colours (one right answer per question), objects inside the image, apart,
    on the model's patch grid once the image is resized to 128px, shapes in the slots above the word."""
    for i in range(200):
        scene = demo.make_scene(demo.DEFAULT_SEED, "validation", i)
        kinds = [s.kind for s in scene.shapes]
        colors = [s.color for s in scene.shapes]
        assert 1 <= len(scene.shapes) <= 3 and len(set(kinds)) == len(kinds) and len(set(colors)) == len(colors)
        assert scene.width == scene.height and scene.width in demo.IMAGE_SIZES
        cell = scene.width // demo.GRID
        left, top, right, bottom = demo._font(scene.font_size).getbbox(scene.word)
        ink = (scene.word_xy[0] + left, scene.word_xy[1] + top, scene.word_xy[0] + right, scene.word_xy[1] + bottom)
        assert ink[0] % cell == 0 and ink[1] % cell == 0 and ink[0] >= 0 and ink[2] <= scene.width
        boxes = [s.box for s in scene.shapes]
        for x1, y1, x2, y2 in boxes:
            assert all(c % cell == 0 for c in (x1, y1, x2, y2))
            assert x1 // cell in demo.SLOT_COLUMNS and y1 // cell in demo.SLOT_ROWS and y2 <= ink[1]
            assert (x2 - x1) // cell in demo.SHAPE_CELLS
            assert 0 <= x1 < x2 <= scene.width and 0 <= y1 < y2 <= scene.height and x2 - x1 == y2 - y1
        for a in [*boxes, ink]:
            for b in boxes:
                if a is not b:
                    assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (i, a, b)


@pytest.mark.parametrize("task", demo.TASKS)
def test_shipped_parquet_equals_the_generator(task):
    """The files in assets/data are what `python -m evalkit.demo.data` writes (none hand-edited)."""
    for split, n in demo.SPLIT_SIZES.items():
        shipped = pq.read_table(demo.DATA_DIR / task / f"{split}.parquet").to_pylist()
        assert shipped == demo.split_rows(task, split), f"{task}/{split}: regenerate with python -m evalkit.demo.data"
        assert len(shipped) == n


def test_rows_follow_the_real_schemas():
    scene = demo.make_scene(demo.DEFAULT_SEED, "test", 3)
    vqa = demo.make_row("demo_vqa", scene, demo.DEFAULT_SEED, "test", 3)
    assert len(vqa["answers"]) == 10 and {"answer", "answer_id"} <= set(vqa["answers"][0])
    assert vqa["multiple_choice_answer"] in [a["answer"] for a in vqa["answers"]]
    text = demo.make_row("demo_textvqa", scene, demo.DEFAULT_SEED, "test", 3)
    assert len(text["answers"]) == 10 and text["ocr_tokens"] == [scene.word]
    caption = demo.make_row("demo_caption", scene, demo.DEFAULT_SEED, "test", 3)
    assert len(caption["captions"]) == 5 and all(c for c in caption["captions"])
    image = Image.open(io.BytesIO(caption["image"]["bytes"]))
    assert image.size == (scene.width, scene.height) and image.mode == "RGB"
    with pytest.raises(KeyError, match="unknown demo task"):
        demo.make_row("demo_nope", scene, demo.DEFAULT_SEED, "test", 3)


def test_grounding_target_round_trips_through_the_official_parser():
    """The trained answer `(x1,y1),(x2,y2)</box>` on the 0..999 grid scales back onto the gold box."""
    for i in range(100):
        scene = demo.make_scene(demo.DEFAULT_SEED, "test", i)
        row = demo.make_row("demo_refcoco", scene, demo.DEFAULT_SEED, "test", i)
        box = parse_box(row["box_text"], row["width"], row["height"])
        assert box is not None and iou(box, row["bbox"]) > 0.9


def test_vqa_answers_are_correct_for_the_scene():
    for i in range(100):
        scene = demo.make_scene(demo.DEFAULT_SEED, "test", i)
        row = demo.make_row("demo_vqa", scene, demo.DEFAULT_SEED, "test", i)
        q, a = row["question"], row["multiple_choice_answer"]
        if q.startswith("How many"):
            assert a == str(len(scene.shapes))
        elif q.startswith("What color is the "):
            kind = q.removeprefix("What color is the ").rstrip("?")
            assert a == next(s.color for s in scene.shapes if s.kind == kind)
        elif q.startswith("Is there a "):
            color, kind = q.removeprefix("Is there a ").rstrip("?").split()
            assert a == ("yes" if any((s.color, s.kind) == (color, kind) for s in scene.shapes) else "no")


def test_demo_tasks_load_through_the_parquet_path():
    registry = Registry()
    assert set(registry.groups["demo"]) == set(demo.TASKS)
    for task in demo.TASKS:
        spec = registry.get(task)
        samples = load_samples(spec)
        assert len(samples) == demo.SPLIT_SIZES["test"]
        assert not any(s.error is not None for s in samples)
        assert len(load_samples(spec, split="validation")) == demo.SPLIT_SIZES["validation"]
    refcoco = load_samples(registry.get("demo_refcoco"))[0]
    assert {"width", "height"} <= set(refcoco.metadata) and len(refcoco.references) == 4


def test_vocabulary_is_an_official_format_rank_file(tmp_path):
    texts = ["<img>x.png</img>What color is the circle? Answer: red", "a red circle and a blue square"]
    n_ranks = build_vocab(tmp_path / "qwen.tiktoken", texts, n_merges=40)
    lines = (tmp_path / "qwen.tiktoken").read_text().splitlines()
    assert len(lines) == n_ranks > 256 and [int(line.split()[1]) for line in lines] == list(range(n_ranks))
    tok = QwenTokenizer(tmp_path / "qwen.tiktoken")
    text = "Is there a purple triangle? Answer: no (12,345),(678,999)"
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("a red circle")) < len(b"a red circle")  # merges were learned
    assert tok.eod_id == n_ranks  # specials numbered from len(ranks) up, as in the release
