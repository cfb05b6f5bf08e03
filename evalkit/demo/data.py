"""The synthetic demo benchmark: coloured shapes and a rendered word, generated from a seed.

Every scene is a pure function of `(seed, split, index)`, so the train split is unbounded (the
training script draws scenes on the fly) while validation and test are fixed lists that are also
shipped as parquet files (`assets/data/`), making the demo tasks load through the same parquet
path as real hub datasets. Rows use the schemas of the real benchmarks the four demo tasks
imitate: COCO/Flickr captions (a list of reference captions), VQAv2 (10 answers per question),
TextVQA (10 answers, OCR tokens) and RefCOCO (one expression, a pixel box `[x1, y1, x2, y2]`,
width and height).

Scenes hold one to three shapes with distinct kinds and distinct colours, so every question
has exactly one correct answer. Splits are disjoint by construction (each split seeds its own
random streams) and the tests check it on the images themselves.
"""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass, field
from functools import cache
from itertools import permutations
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

DEFAULT_SEED = 1234
DATA_DIR = Path(__file__).resolve().parent / "assets" / "data"  # the shipped fixed splits
SPLIT_SIZES = {"validation": 200, "test": 100}  # train is unbounded
TASKS = ("demo_caption", "demo_vqa", "demo_textvqa", "demo_refcoco")

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 205, 30),
    "purple": (135, 60, 185),
    "orange": (245, 130, 25),
}
SHAPES = ("circle", "square", "triangle")
WORDS = ("cat", "dog", "sun", "tree", "book", "fish", "moon", "star", "bird", "cake", "lamp", "ship",
         "frog", "kite", "milk", "rain")
# Layout happens on a grid of cells: the demo model sees a 128px square in 8px patches (16x16),
# and a scene of side S is drawn at S/128 times that scale, so after the processor's resize every
# word and shape sits exactly on patch boundaries. A model this small, trained for minutes, does
# not learn to read a word shifted by a fraction of a patch (measured: chance level, against
# near-perfect reading on the grid); real checkpoints have no such limit, the demo just avoids it.
# For the same reason the word sits in the bottom band and the shapes in six large slots above it
# (three columns, two rows): finding a word among shapes by content alone, or writing the box of a
# shape a sixteenth of the image wide, is also out of reach at this size (measured: boxes of 3-4
# cell shapes anywhere on the grid stay at chance after 1,500 steps; 4-5 cell shapes in the slots
# are located within 1,000).
# The sizes differ so the resize and the box scaling to pixels are exercised.
IMAGE_SIZES = (128, 192, 256)  # square sides in pixels
MODEL_SIDE, GRID = 128, 16  # the demo model's input side and patches per side
SLOT_COLUMNS, SLOT_ROWS = (0, 5, 11), (0, 5)  # the cells where a shape's top-left corner can be
SHAPE_CELLS = (4, 5)  # shape side in cells
# at the 128px scale; at 22-26px the demo model learns to read the word only on scenes without
# shapes (measured: chance among shapes after 1,500 steps, 0.6 at 32-36px after 300)
FONT_SIZES = (32, 34, 36)
WORD_REFERENT_SHARE = 0.2  # demo_refcoco expressions that refer to the word ("the word") instead of a shape

@dataclass(frozen=True)
class ShapeItem:
    kind: str
    color: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels (x2/y2 exclusive)

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"


@dataclass
class Scene:
    """One image's content; `render()` draws it. `key` names it (split and index)."""

    key: str
    width: int
    height: int
    background: tuple[int, int, int]
    shapes: list[ShapeItem]
    word: str
    word_xy: tuple[int, int]
    font_size: int
    jitter: list[tuple[int, int, int]] = field(default_factory=list)  # colour offset per shape

    def render(self) -> Image.Image:
        image = Image.new("RGB", (self.width, self.height), self.background)
        draw = ImageDraw.Draw(image)
        for shape, (dr, dg, db) in zip(self.shapes, self.jitter):
            r, g, b = COLORS[shape.color]
            fill = (_clip(r + dr), _clip(g + dg), _clip(b + db))
            x1, y1, x2, y2 = shape.box
            if shape.kind == "circle":
                draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
            elif shape.kind == "square":
                draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
            else:
                draw.polygon([((x1 + x2 - 1) / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=fill)
        draw.text(self.word_xy, self.word, font=_font(self.font_size), fill=(25, 25, 25))
        return image

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.render().save(buf, format="PNG", optimize=False, compress_level=9)
        return buf.getvalue()

    @property
    def word_box(self) -> tuple[int, int, int, int]:
        """The word's ink box in pixels (x2/y2 exclusive)."""
        left, top, right, bottom = _font(self.font_size).getbbox(self.word)
        x, y = self.word_xy
        return (x + left, y + top, x + right, y + bottom)

    @property
    def left_to_right(self) -> list[ShapeItem]:
        return sorted(self.shapes, key=lambda s: (s.box[0] + s.box[2], s.box[1]))


def _clip(v: int) -> int:
    return max(0, min(255, v))


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled font (no system fonts needed, so every machine draws the same glyphs)."""
    return ImageFont.load_default(size=size)


def rng_for(seed: int, split: str, index: int, purpose: str = "scene") -> random.Random:
    """An independent stream per (seed, split, index, purpose): a scene never depends on its
    neighbours, so any item can be regenerated alone and splits cannot share a stream."""
    digest = hashlib.sha256(f"evalkit-demo/{seed}/{split}/{index}/{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def make_scene(seed: int, split: str, index: int) -> Scene:
    rng = rng_for(seed, split, index)
    side = rng.choice(IMAGE_SIZES)
    cell = side // GRID  # pixels per cell
    background = tuple(rng.randint(205, 255) for _ in range(3))
    word = rng.choice(WORDS)
    font_size = round(rng.choice(FONT_SIZES) * side / MODEL_SIDE)
    left, top, right, bottom = _font(font_size).getbbox(word)
    word_w, word_h = -(-(right - left) // cell), -(-(bottom - top) // cell)  # ink size in cells
    wx, wy = rng.randrange(GRID - word_w + 1), GRID - word_h  # the bottom band, below every slot
    n = rng.choice((1, 2, 2, 3, 3))
    slots = rng.sample([(x, y) for y in SLOT_ROWS for x in SLOT_COLUMNS], n)
    shapes = []
    for kind, color, (x, y) in zip(rng.sample(SHAPES, n), rng.sample(list(COLORS), n), slots):
        k = rng.choice(SHAPE_CELLS)
        shapes.append(ShapeItem(kind, color, (x * cell, y * cell, (x + k) * cell, (y + k) * cell)))
    jitter = [tuple(rng.randint(-12, 12) for _ in range(3)) for _ in shapes]
    word_xy = (wx * cell - left, wy * cell - top)  # the glyphs' ink box starts on a cell corner
    return Scene(f"{split}-{index:06d}", side, side, background, shapes, word, word_xy, font_size, jitter)


# ---------------------------------------------------------------- task rows


def _list_names(items: list[ShapeItem]) -> str:
    names = [f"a {s.name}" for s in items]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def captions(scene: Scene) -> list[str]:
    """Five references: the canonical left-to-right caption first, then paraphrases and other orders."""
    ordered = scene.left_to_right
    canonical = _list_names(ordered)
    others = [_list_names(list(p)) for p in permutations(ordered)][1:] or [canonical]
    return [
        canonical,
        f"there is {canonical}",
        others[-1],
        f"{others[0]} on a plain background",
        f"an image of {_list_names(ordered[::-1])}",
    ]


def _noisy_answers(answer: str, wrong: list[str], rng: random.Random) -> list[str]:
    """Ten annotator answers: the true one, now and then a dissenting one (as in VQAv2)."""
    answers = [answer] * 10
    if wrong and rng.random() < 0.3:
        answers[rng.randrange(10)] = rng.choice(wrong)
    return answers


def vqa_question(scene: Scene, rng: random.Random) -> tuple[str, str, str, list[str]]:
    """(question, answer, answer_type, plausible wrong answers) of one of four kinds."""
    kind = rng.choice(("color", "count", "exists", "shape"))
    shape = rng.choice(scene.shapes)
    present_colors = [s.color for s in scene.shapes]
    if kind == "color":
        return f"What color is the {shape.kind}?", shape.color, "other", [c for c in COLORS if c != shape.color]
    if kind == "shape":
        return f"Which shape is {shape.color}?", shape.kind, "other", [k for k in SHAPES if k != shape.kind]
    if kind == "count":
        n = len(scene.shapes)
        question = rng.choice(("How many shapes are there?", "How many shapes are in the image?"))
        return question, str(n), "number", [str(k) for k in (1, 2, 3) if k != n]
    if rng.random() < 0.5:
        target = shape
        answer = "yes"
    else:  # a pair that is not there, sharing a colour or a kind with the scene to be hard
        present = {(s.kind, s.color) for s in scene.shapes}
        absent = [(k, c) for k in SHAPES for c in COLORS if (k, c) not in present
                  and (c in present_colors or k in {s.kind for s in scene.shapes})]
        kind_, color = rng.choice(absent)
        target = ShapeItem(kind_, color, (0, 0, 0, 0))
        answer = "no"
    return f"Is there a {target.name}?", answer, "yes/no", ["no" if answer == "yes" else "yes"]


def box_text(scene: Scene, box: tuple[int, int, int, int]) -> str:
    """The box on Qwen-VL's 0..999 grid as the model should write it after `<box>`."""
    x1, y1, x2, y2 = box
    sx, sy = 999 / scene.width, 999 / scene.height
    return f"({round(x1 * sx)},{round(y1 * sy)}),({round(x2 * sx)},{round(y2 * sy)})</box>"


def expression(shape: ShapeItem, rng: random.Random) -> str:
    form = rng.random()
    if form < 0.5:
        return f"the {shape.color} {shape.kind}"
    if form < 0.75:
        return f"the {shape.kind}"
    return f"the {shape.color} shape"


def make_row(task: str, scene: Scene, seed: int, split: str, index: int, with_image: bool = True,
             variant: int = 0) -> dict[str, Any]:
    """One dataset row of `task` for `scene`, in the schema of the real dataset it imitates.

    `variant` > 0 draws another question (or referred shape) about the same scene: training asks
    several per image, because the image prefix dominates a step's cost and the questions are cheap.
    The shipped splits are variant 0.
    """
    rng = rng_for(seed, split, index, task if not variant else f"{task}#{variant}")
    row: dict[str, Any] = {"image_id": scene.key}
    if with_image:
        row["image"] = {"bytes": scene.png(), "path": f"{scene.key}.png"}
    if task == "demo_caption":
        row.update(id=f"{scene.key}-cap", captions=captions(scene), width=scene.width, height=scene.height)
    elif task == "demo_vqa":
        question, answer, answer_type, wrong = vqa_question(scene, rng)
        answers = _noisy_answers(answer, wrong, rng)
        row.update(
            question_id=f"{scene.key}-vqa", question=question, answer_type=answer_type,
            answers=[{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)],
            multiple_choice_answer=answer,
        )
    elif task == "demo_textvqa":
        question = rng.choice(("What word is written in the image?", "What does the text say?",
                               "What is written here?"))
        answers = _noisy_answers(scene.word, [w for w in WORDS if w != scene.word], rng)
        row.update(question_id=f"{scene.key}-txt", question=question, answers=answers,
                   ocr_tokens=[scene.word], answer=scene.word)
    elif task == "demo_refcoco":
        if rng.random() < WORD_REFERENT_SHARE:  # text is a referent too
            ref_id, sentence, box = f"{scene.key}-word", rng.choice(("the word", "the text")), scene.word_box
        else:
            shape = rng.choice(scene.shapes)
            ref_id, sentence, box = f"{scene.key}-{shape.kind}", expression(shape, rng), shape.box
        row.update(
            sent_id=f"{scene.key}-ref", ref_id=ref_id, sentence=sentence, bbox=list(box),
            width=scene.width, height=scene.height, box_text=box_text(scene, box),
        )
    else:
        raise KeyError(f"unknown demo task {task!r}; known: {', '.join(TASKS)}")
    return row


def target_text(task: str, row: dict[str, Any]) -> str:
    """What the model is trained to write after the task's prompt (eval_mm's few-shot form:
    a space, then the answer; grounding continues `<box>` directly, as Qwen-VL writes boxes)."""
    if task == "demo_caption":
        return " " + row["captions"][0]
    if task == "demo_vqa":
        return " " + row["multiple_choice_answer"]
    if task == "demo_textvqa":
        return " " + row["answer"]
    if task == "demo_refcoco":
        return row["box_text"]
    raise KeyError(task)


def split_rows(task: str, split: str, n: int | None = None, seed: int = DEFAULT_SEED) -> list[dict[str, Any]]:
    """The first `n` rows of a split (the whole fixed split when n is None)."""
    if n is None:
        if split not in SPLIT_SIZES:
            raise ValueError(f"split {split!r} is unbounded: pass n")
        n = SPLIT_SIZES[split]
    return [make_row(task, make_scene(seed, split, i), seed, split, i) for i in range(n)]


def write_parquet(out_dir: str | Path, seed: int = DEFAULT_SEED) -> list[Path]:
    """Write `<task>/<split>.parquet` for the fixed splits (the files shipped in assets/data)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    written = []
    for task in TASKS:
        for split in SPLIT_SIZES:
            path = Path(out_dir) / task / f"{split}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            table = pa.Table.from_pylist(split_rows(task, split, seed=seed))
            pq.write_table(table, path, compression="zstd")
            written.append(path)
    return written


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write the demo suite's fixed splits as parquet files.")
    parser.add_argument("--out", default=str(DATA_DIR))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    for p in write_parquet(args.out, args.seed):
        print(p, p.stat().st_size)
