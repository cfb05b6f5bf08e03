"""Writes benchmarks/data/: 256 VQAv2-style questions over 100 generated 640x480 JPEGs, in the
hub schema of lmms-lab-encoder/VQAv2 (the COCO image embedded in each row), so `evalkit bench
--tasks vqav2_val --data-dir benchmarks/data` times `evalkit run`'s whole pipeline on
real-size images offline. Deterministic; run it to regenerate:

    python benchmarks/make_bench_data.py

The images are smooth gradients with ellipses (real-size pixels, small files: ~15 KB each);
decode and resize cost what a COCO photo of the same size costs. Parquet's dictionary encoding
stores each image once although 2-3 questions share it.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent / "data" / "lmms-lab-encoder" / "VQAv2" / "data"
IMAGES, QUESTIONS = 100, 256
V = datasets.Value
ANSWERS = [{"answer": V("string"), "answer_confidence": V("string"), "answer_id": V("int64")}]
FEATURES = datasets.Features({
    "question_type": V("string"), "multiple_choice_answer": V("string"), "answers": ANSWERS,
    "image_id": V("int64"), "answer_type": V("string"), "question_id": V("int64"), "question": V("string"),
    "image": datasets.Image(),
})
QA = [("what color is the ball?", "red"), ("how many people are there?", "2"), ("is it daytime?", "yes"),
      ("what is on the table?", "cake"), ("what sport is being played?", "tennis"),
      ("what is the man holding in his right hand?", "umbrella"), ("is there a dog in the picture?", "no"),
      ("what is the color of the bus parked near the old building?", "blue")]


def jpeg(i: int, rng: np.random.Generator) -> bytes:
    w, h = 640, 480
    y, x = np.mgrid[0:h, 0:w]
    pixels = np.stack([(x * (i % 7 + 1) / w * 255) % 256, (y * (i % 5 + 1) / h * 255) % 256,
                       ((x + y) * (i % 3 + 1) / (w + h) * 255) % 256], -1).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 60), rng.integers(0, h - 60)
        draw.ellipse((x0, y0, x0 + rng.integers(20, 200), y0 + rng.integers(20, 200)),
                     fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def main() -> None:
    rng, pick = np.random.default_rng(0), random.Random(0)
    images = [jpeg(i, rng) for i in range(IMAGES)]
    rows = []
    for q in range(QUESTIONS):
        i = q * IMAGES // QUESTIONS  # 2-3 questions per image, consecutive like the hub's rows
        question, answer = pick.choice(QA)
        answers = [{"answer": answer if k < 8 else "other", "answer_confidence": "yes", "answer_id": k + 1}
                   for k in range(10)]
        rows.append({"question_type": "what", "multiple_choice_answer": answer, "answers": answers,
                     "image_id": 500000 + i, "answer_type": "other", "question_id": (500000 + i) * 1000 + q,
                     "question": question, "image": {"bytes": images[i], "path": f"COCO_val2014_{500000 + i:012d}.jpg"}})
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "validation-00000-of-00001.parquet"
    table = datasets.Dataset.from_list(rows, features=FEATURES).data.table  # with the features in its metadata
    pq.write_table(table, path, use_dictionary=True, dictionary_pagesize_limit=64 << 20)  # each image stored once
    print(f"wrote {path}: {QUESTIONS} questions over {IMAGES} images, {path.stat().st_size / 1e6:.2f} MB "
          f"({sum(map(len, images)) / 1e6:.2f} MB of JPEG)")


if __name__ == "__main__":
    main()
