"""Bad data through the runner: broken images and rows become per-sample errors and the run completes;
`--max-errors` fails it past a threshold; malformed model outputs never crash scoring in any metric family.

The bad rows (tests/fixtures/bad_data.py) are corrupt bytes, a missing file, a row without an image,
an empty question, 1x1 and 20000x20000 (a header-only bomb) images, RGBA/P/L/I;16/CMYK modes and a
unicode question and answer.
"""

from __future__ import annotations

import functools
import json
import math
import re

import pytest
from conftest import TINY_CKPT
from fixtures.bad_data import DECODE_ERRORS, ROW_ERRORS, ROWS, make_bad_task
from fixtures.catalog import DATA, PREDS, registry

from evalkit.cli import main
from evalkit.models.replay import ReplayModel
from evalkit.registry import Registry
from evalkit.results.runs import SampleCache
from evalkit.runner import Runner, RunSettings
from evalkit.task import ChoiceScore


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return make_bad_task(tmp_path_factory.mktemp("bad"))


def run_bad(bad, out, model: str, *extra: str) -> int:
    return main(["run", "--model", model, "--tasks", bad.name, "--tasks-dir", str(bad.tasks_dir), "-o", str(out),
                 "--no-progress", "--batch-size", "4", "--device", "cpu", "--dtype", "fp32", *extra])


def errors_column(printed: str, task: str) -> int:
    row = next(line for line in printed.splitlines() if line.startswith(task))
    return int(row.split()[-1])


def test_qwen_vl_records_undecodable_images_and_answers_the_rest(bad, tmp_path, capsys):
    assert run_bad(bad, tmp_path / "run", f"qwen-vl:{TINY_CKPT}", "--max-errors", "4") == 0  # 4 errors: at the limit
    printed = capsys.readouterr().out
    preds = {p.sample_id: p for p in SampleCache(tmp_path / "run" / "samples" / f"{bad.name}.jsonl").read_finished()}
    assert list(preds) == list(ROWS)  # every row, once, in dataset order
    assert {sid for sid, p in preds.items() if p.error} == DECODE_ERRORS | ROW_ERRORS
    assert all(p.output and p.error is None for sid, p in preds.items() if sid not in DECODE_ERRORS | ROW_ERRORS)
    assert "decompression bomb" in preds["huge_20000"].error  # refused from the header, never allocated
    assert "missing.png" in preds["missing_file"].error
    # Pillow's own words for a broken PNG differ by version ("cannot identify", "Truncated File Read"): the file is named
    assert "cannot decode image" in preds["corrupt_bytes"].error and "corrupt.png" in preds["corrupt_bytes"].error
    assert preds["no_image"].error.startswith("bad row:")
    assert "0x" not in preds["corrupt_bytes"].error  # no memory addresses: reruns write the same bytes
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["tasks"][bad.name]["n_errors"] == 4 == errors_column(printed, bad.name)


def test_replay_needs_no_pixels_and_scores_unicode(bad, tmp_path, capsys):
    assert run_bad(bad, tmp_path / "run", f"replay:{bad.predictions}") == 0
    assert errors_column(capsys.readouterr().out, bad.name) == 1  # only the row that has no image at all
    preds = {p.sample_id: p for p in SampleCache(tmp_path / "run" / "samples" / f"{bad.name}.jsonl").read_finished()}
    assert preds["unicode"].scores["vqa_accuracy"] == 1.0 and "这是什么" in preds["unicode"].prompt
    assert preds["empty_question"].prompt == "<img><image></img> Answer:"


def test_max_errors_fails_the_run_past_the_threshold(bad, tmp_path, capsys):
    assert run_bad(bad, tmp_path / "run", f"qwen-vl:{TINY_CKPT}", "--max-errors", "3") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' weight-loading bar
    assert re.fullmatch(rf"evalkit: error: task {bad.name}: \d+ samples failed, more than --max-errors 3", err)
    assert not (tmp_path / "run" / "run.json").exists()


# ---------------------------------------------------------------- malformed model outputs

TEXTS = ["", " ", "\x00\x01\x7f", "x" * 100_000, "\ud800 lone surrogate", "Ω≈ç√ 这是 🙂 e\u0301 \u202e",
         "<box>(nan,inf),(1e309,-5)</box>", "<box>(1,2),(3", "<ref>a</ref><box>(999,999),(0,0)</box>",
         '{"a": [1, {"b"', "1e999", "A. B. C.", "\n\n", "%s {0} {} {question}", "<|endoftext|><img>"]
NOT_TEXT = [None, 5, 3.5, {"a": [1]}, ["x"], b"bytes"]
CHOICES = [None, [], "A", [1, 2], "nan", "inf", "short"]  # see Junk.loglikelihood


class Junk(ReplayModel):
    """Answers each request with junk picked by its index (shifted by `offset`, so every sample meets every kind)."""

    def __init__(self, path, offset: int, texts: list):
        super().__init__(path)
        self.offset, self.texts = offset, texts

    def pick(self, request, items):
        return items[(request.index + self.offset) % len(items)]

    def generate(self, requests):
        return [self.pick(r, self.texts) for r in requests]

    def loglikelihood(self, requests):
        def scores(r, kind):
            n = len(r.choices)
            return {"nan": [ChoiceScore(math.nan, 1)] * n, "inf": [ChoiceScore(-math.inf, 0)] + [ChoiceScore(math.nan, 2)] * (n - 1),
                    "short": [ChoiceScore(-1.0, 1)] * (n - 1)}.get(kind, kind) if isinstance(kind, str) else kind
        return [scores(r, self.pick(r, CHOICES)) for r in requests]


FAMILIES = ["okvqa_val", "docvqa_val", "chartqa_test_human", "gqa_testdev_balanced", "refcoco_val",
            "scienceqa_img_test", "coco_karpathy_test"]  # vqa, anls, relaxed, exact match, grounding, choice, caption
RERUN = {"okvqa_val", "scienceqa_img_test"}  # where the cached form could differ from memory: text, NaN scores


@pytest.mark.parametrize("task", FAMILIES)
def test_malformed_outputs_never_crash_scoring(task, tmp_path):
    texts = TEXTS + NOT_TEXT if task == FAMILIES[0] else TEXTS  # non-text is the runner's check, the same for all
    n_kinds = len(CHOICES) if registry().get(task).output_type == "choice" else len(texts)
    for offset in range(0, n_kinds, len(spec_samples(task))):
        out = tmp_path / str(offset)
        settings = RunSettings(output=out, batch_size=3, progress=False, data_dir=str(DATA))
        first = Runner(Junk(PREDS, offset, texts), settings).run(Registry().select(task))
        entry = first["tasks"][task]
        assert entry["n_samples"] == len(spec_samples(task))
        for metric in entry["metrics"].values():
            assert metric["value"] is None or math.isfinite(metric["value"])
        preds = SampleCache(out / "samples" / f"{task}.jsonl").read_finished()
        for p in preds:
            if p.error:
                assert p.error.startswith("MalformedOutput: the model returned")
        if task not in RERUN:
            continue
        # everything is cached now: a rerun reads it all back and must score it the same
        again = Runner(Junk(PREDS, offset, texts), settings).run(Registry().select(task))
        assert again["tasks"][task]["metrics"] == entry["metrics"] and again["tasks"][task]["info"] == entry["info"]


@functools.cache
def spec_samples(task: str) -> list:
    from evalkit.data import load_samples

    return load_samples(registry().get(task), str(DATA))
