"""Honest comparisons across different sample sets: two runs with identical outputs on the samples they
share, one of them scored on a subset. Corpus metrics (CIDEr's document frequencies, BLEU's and METEOR's
corpus totals) are recomputed on the shared samples on both sides, so the delta is 0, not significant,
`check` passes and `diff` finds no differing sample. Real runs: a caption task through `evalkit run`."""

from __future__ import annotations

import itertools
import json

import pytest
from fixtures.catalog import DATA

from evalkit.cli import main
from evalkit.results.check import check_run
from evalkit.results.compare import build_table
from evalkit.results.diff import diff_runs
from evalkit.results.runs import open_run

COLOURS = ["red", "blue", "green", "yellow", "black"]
THINGS = ["dog", "cat", "bus", "bird", "horse"]
PLACES = ["street", "field", "beach", "kitchen", "road"]
SPEC = """
task: shared_captions
groups: [captioning]
dataset: {{format: jsonl, data_files: "{data}"}}
fields: {{id: id, image: image, references: captions}}
prompts: {{base: "<img>{{image}}</img>Describe the image in English:"}}
generation: {{max_new_tokens: 30}}
metrics: [{{name: caption}}]
"""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    image = str(DATA / "coco" / "val2014" / "COCO_val2014_000000001005.jpg")
    combos = list(itertools.product(COLOURS, THINGS, PLACES))[::5][:25]
    rows, preds = [], []
    for i, (colour, thing, place) in enumerate(combos):
        refs = [f"a {colour} {thing} on the {place}", f"the {thing} is {colour}", f"a {thing} in a {place}",
                f"{colour} {thing} standing near a {place}", f"there is a {thing} outside"]
        rows.append({"id": i, "image": image, "captions": refs})
        guess = [f"a {colour} {thing}", f"a {thing} on the {place}", f"a {COLOURS[i % 5]} animal"][i % 3]
        preds.append({"sample_id": str(i), "output": guess})
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "preds.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    (root / "tasks").mkdir()
    (root / "tasks" / "shared_captions.yaml").write_text(SPEC.format(data=root / "data.jsonl"))
    common = ["run", "--model", f"replay:{root / 'preds.jsonl'}", "--tasks", "shared_captions",
              "--tasks-dir", str(root / "tasks"), "--no-progress"]
    assert main([*common, "-o", str(root / "full")]) == 0
    assert main([*common, "--limit", "20", "-o", str(root / "subset")]) == 0
    full, subset = open_run(root / "full"), open_run(root / "subset")
    stored = [r.tasks["shared_captions"]["metrics"]["CIDEr"]["value"] for r in (full, subset)]
    assert stored[0] != pytest.approx(stored[1], abs=1e-3)  # the stored CIDErs differ: different sets
    return full, subset


def test_compare_recomputes_corpus_metrics_on_shared_samples(two_runs):
    full, subset = two_runs
    table = build_table([full, subset], baseline=full, all_metrics=True)
    rows = {row.metric: row.cells[subset.label] for row in table.rows}
    for metric in ("CIDEr", "BLEU_4", "METEOR", "ROUGE_L"):
        assert rows[metric].delta == pytest.approx(0.0, abs=1e-9), metric
        assert not rows[metric].significance.below(0.05), metric
    text = table.render("md")
    assert "CIDEr recomputed on the 20 samples" in text


def test_check_passes_and_diff_finds_nothing(two_runs, capsys):
    full, subset = two_runs
    result = check_run(subset, full, max_drop=0.5)
    assert not result.failed and not result.regressed
    assert any("recomputed on the 20 samples" in w for w in result.warnings)
    diff = diff_runs(full, subset, "shared_captions")
    assert diff.n_shared == 20 and diff.disagreements == [] and diff.recomputed
    assert main(["diff", str(full.path), str(subset.path), "--task", "shared_captions"]) == 0
    assert "20 shared samples, 0 differ" in capsys.readouterr().out
