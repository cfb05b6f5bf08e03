"""`evalkit run --model qwen-vl:PATH` end to end on the reference fixture checkpoint.

The expected outputs are the reference's: tests/fixtures/qwen_vl_tiny/expected.json holds the greedy
generations (12 new tokens, batch 1) of the original Qwen-VL remote code on the fixture checkpoint for
single-image prompts. A task whose rows are exactly those prompts runs through the CLI (batched, so a batch
that drops or shifts a row fails) and every row's output must be the reference's text.
"""

from __future__ import annotations

import json

import yaml
from conftest import TINY_CKPT, TINY_DIR

from evalkit.cli import main

# reference record id -> (image, text after the image) of its prompt "<img>{image}</img>{text}"
RECORDS = {"caption_eval": ("img_a.png", "Describe the image in English:"),
           "caption_hf": ("img_b.png", "Generate the caption in English:"),
           "vqa": ("img_b.png", "What color is the square? Answer:")}


def write_task(root, expected: dict) -> str:
    by_id = {r["id"]: r for r in expected["records"]}
    rows = []
    for rid, (image, text) in RECORDS.items():
        assert by_id[rid]["prompt"] == f"<img>{image}</img>{text}"  # the fixture's own prompt
        rows.append({"id": rid, "image": image, "question": text, "answer": by_id[rid]["greedy"]["text_skip_special"]})
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "task": "qwen_vl_reference", "groups": [], "description": "the parity fixture's single-image prompts",
        "dataset": {"format": "jsonl", "data_files": str(root / "rows.jsonl"), "image_root": str(TINY_DIR)},
        "fields": {"id": "id", "image": "image", "question": "question", "references": "answer"},
        "prompts": {"base": "<img>{image}</img>{question}"},
        "generation": {"max_new_tokens": 12, "min_new_tokens": 1},  # the reference's greedy settings
        "metrics": [{"name": "exact_match", "options": {"normalize": "plain"}}],
    }
    (root / "tasks").mkdir()
    (root / "tasks" / "qwen_vl_reference.yaml").write_text(yaml.safe_dump(spec))
    return str(root / "tasks")


def test_run_qwen_vl_fixture_checkpoint_matches_the_reference(tmp_path, capsys, expected):
    tasks_dir = write_task(tmp_path, expected)
    out = tmp_path / "run"
    rc = main(["run", "--model", f"qwen-vl:{TINY_CKPT}", "--tasks-dir", tasks_dir, "--tasks", "qwen_vl_reference",
               "-o", str(out), "--batch-size", "2", "--no-progress",
               "--device", "cpu", "--dtype", "fp32"])  # pinned: the reference ran fp32 on the CPU; the GPU default is bf16
    assert rc == 0
    printed = capsys.readouterr().out
    assert "qwen_vl_reference" in printed and "exact_match" in printed
    run = json.loads((out / "run.json").read_text())
    task = run["tasks"]["qwen_vl_reference"]
    assert task["n_samples"] == 3 and task["n_errors"] == 0
    assert run["model"]["name"] == f"qwen-vl:{TINY_CKPT.name}" and len(run["model"]["weights_sha256"]) == 64
    rows = [json.loads(line) for line in (out / "samples" / "qwen_vl_reference.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in expected["records"]}
    assert [r["sample_id"] for r in rows] == list(RECORDS)
    for row in rows:  # every row: the reference's greedy text (the references hold it too: exact match 1)
        assert row["output"].strip() == by_id[row["sample_id"]]["greedy"]["text_skip_special"].strip(), row["sample_id"]
        assert row["prompt"].startswith("<img>")
    assert task["metrics"]["exact_match"]["value"] == 1.0
