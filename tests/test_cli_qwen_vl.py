"""`evalkit run --model qwen-vl:PATH` end to end on the reference fixture checkpoint."""

from __future__ import annotations

import json

from conftest import TINY_CKPT

from evalkit.cli import main
from evalkit.data import load_samples
from evalkit.models.qwen_vl.harness import QwenVLModel
from evalkit.prompts import build_request
from evalkit.registry import Registry


def test_run_qwen_vl_fixture_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--model", f"qwen-vl:{TINY_CKPT}", "--tasks", "vqav2_mini", "-o", str(out),
               "--batch-size", "4", "--no-progress", "--device", "cpu", "--dtype", "fp32"])  # pinned: the GPU default is bf16
    assert rc == 0
    printed = capsys.readouterr().out
    assert "vqav2_mini" in printed and "vqa_accuracy" in printed
    run = json.loads((out / "run.json").read_text())
    task = run["tasks"]["vqav2_mini"]
    assert task["n_samples"] == 18 and task["n_errors"] == 0
    assert run["model"]["name"] == f"qwen-vl:{TINY_CKPT.name}" and len(run["model"]["weights_sha256"]) == 64
    rows = [json.loads(line) for line in (out / "samples" / "vqav2_mini.jsonl").read_text().splitlines()]
    # the runner's outputs are the model's greedy outputs on the task's own prompts (batch 1, hf path)
    spec = Registry().get("vqav2_mini")
    samples = load_samples(spec)[:3]
    model = QwenVLModel.from_spec(str(TINY_CKPT), dtype="fp32", device="cpu", batch_size=1, engine="hf")
    expected = model.generate([build_request(spec, s, "base") for s in samples])
    assert [r["output"] for r in rows[:3]] == expected
    assert all(r["prompt"].startswith("<img>") for r in rows)
