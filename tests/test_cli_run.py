"""End to end through the CLI: the VQAv2-schema fixture scored with the replay model, resumed runs,
and the user mistakes that must end in one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.models.replay import ReplayModel
from evalkit.registry import Registry
from evalkit.runner import Runner, RunSettings

BUNDLED = Path(__file__).resolve().parents[1] / "evalkit" / "data" / "bundled" / "vqav2_mini"
PREDS = BUNDLED / "predictions_eval_mm.json"


# Hand-computed VQA accuracy (eval_mm variant) of every replayed answer: the prediction is normalised ("two" -> "2",
# "One" -> "1"), ten humans of whom at least 8 agree, so an answer that matches scores 1; "purple" matches nobody.
EXPECTED_SCORES = {str(q): 1.0 for q in range(1001, 1019)} | {"1004": 0.0, "1011": 0.0, "1018": 0.0}
EXPECTED_ACCURACY = 15 / 18


def strip_volatile(run: dict) -> dict:
    run = {k: v for k, v in run.items() if k not in ("created", "timing", "settings")}
    run["tasks"] = {k: {kk: vv for kk, vv in t.items() if kk != "seconds"} for k, t in run["tasks"].items()}
    return run


def test_run_replay_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--model", f"replay:{PREDS}", "--tasks", "vqav2_mini", "--output", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    task = run["tasks"]["vqav2_mini"]
    value = task["metrics"][task["primary_metric"]]["value"]
    assert value == pytest.approx(EXPECTED_ACCURACY, abs=1e-12)
    lo, hi = task["metrics"][task["primary_metric"]]["ci95"]
    assert lo <= value <= hi
    assert task["n_samples"] == 18 and task["n_errors"] == 0
    assert run["model"]["name"] == "replay" and len(run["model"]["sha256"]) == 64
    assert {"evalkit", "torch", "transformers", "python"} <= set(run["versions"])
    assert task["spec_hash"] and task["prompt_hash"] and task["dataset_fingerprint"]
    lines = (out / "samples" / "vqav2_mini.jsonl").read_text().splitlines()
    assert {(r := json.loads(x))["sample_id"]: r["scores"]["vqa_accuracy"] for x in lines} == EXPECTED_SCORES
    first = json.loads(lines[0])
    assert first["sample_id"] == "1001" and first["prompt"] == "<img><image></img>what color is the shape? Answer:"
    assert task["primary_metric"] in first["scores"]
    assert "vqav2_mini" in printed and f"{value:.4f}" in printed


class KilledAfter(ReplayModel):
    """Replays, but dies (like a kill) after `limit` model calls; counts what it was asked."""

    def __init__(self, path, limit=None):
        super().__init__(path)
        self.limit, self.calls, self.seen = limit, 0, []

    def generate(self, requests):
        if self.limit is not None and self.calls >= self.limit:
            raise KeyboardInterrupt
        self.calls += 1
        self.seen += [r.sample_id for r in requests]
        return super().generate(requests)


def test_resume_recomputes_nothing_and_matches_uninterrupted(tmp_path):
    specs = Registry().select("vqav2_mini")
    settings = dict(batch_size=4, progress=False, model_spec="replay")
    with pytest.raises(KeyboardInterrupt):
        Runner(KilledAfter(PREDS, limit=2), RunSettings(output=tmp_path / "a", **settings)).run(specs)
    assert not (tmp_path / "a" / "run.json").exists()  # never a half-written run.json
    resumed = KilledAfter(PREDS)
    data = Runner(resumed, RunSettings(output=tmp_path / "a", **settings)).run(specs)
    assert len(resumed.seen) == 18 - 8 and len(set(resumed.seen)) == 10  # only the missing ones
    full = Runner(KilledAfter(PREDS), RunSettings(output=tmp_path / "b", **settings)).run(specs)
    assert strip_volatile(data) == strip_volatile(full)
    a = (tmp_path / "a" / "samples" / "vqav2_mini.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "samples" / "vqav2_mini.jsonl").read_bytes()


def test_missing_predictions_are_recorded_per_sample(tmp_path, capsys):
    preds = json.loads(PREDS.read_text())[:-3]
    f = tmp_path / "partial.json"
    f.write_text(json.dumps(preds))
    assert main(["run", "--model", f"replay:{f}", "--tasks", "vqav2_mini", "-o", str(tmp_path / "r")]) == 0
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["tasks"]["vqav2_mini"]["n_errors"] == 3
    errors = [json.loads(x) for x in (tmp_path / "r" / "samples" / "vqav2_mini.jsonl").read_text().splitlines()]
    assert sum("no prediction for sample" in e.get("error", "") for e in errors) == 3
    assert main(["run", "--model", f"replay:{f}", "--tasks", "vqav2_mini", "-o", str(tmp_path / "r2"),
                 "--max-errors", "2"]) == 2
    assert "more than --max-errors 2" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--tasks", "vqav2_mnii"], "unknown task 'vqav2_mnii'; did you mean vqav2_mini"),
        (["run", "--model", "replay:/nonexistent.json", "--tasks", "vqav2_mini"], "predictions path not found"),
        (["run", "--model", "qwen-vl", "--tasks", "vqav2_mini"], "needs a path"),
    ],
)
def test_user_mistakes_are_one_line(argv, message, tmp_path, capsys):
    assert main([*argv, "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evalkit: error:") and message in err and "\n" not in err


def test_output_folder_of_another_model_is_refused(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["run", "--model", f"replay:{PREDS}", "--tasks", "vqav2_mini", "-o", out]) == 0
    other = tmp_path / "other.json"
    other.write_text(PREDS.read_text().replace('"red"', '"blue"'))
    assert main(["run", "--model", f"replay:{other}", "--tasks", "vqav2_mini", "-o", out]) == 2
    assert "different model" in capsys.readouterr().err


def test_tasks_command_lists_specs(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "vqav2_mini" in out and "vqa_accuracy" in out and "/VQAv2" in out


class Streaming(ReplayModel):
    """Replays in batches of 3 inside one call, as the Qwen-VL engine does with "auto": reports
    each batch through on_batch, records what the cache file held at each report, and fails on
    request `bad` (a call of that request alone fails too)."""

    streams_batches = True
    call_size = 10

    def __init__(self, path, cache_file: Path, bad: str | None = None):
        super().__init__(path)
        self.cache_file, self.bad = cache_file, bad
        self.calls: list[int] = []
        self.saved_at_report: list[int] = []

    def generate(self, requests, on_batch=None):
        self.calls.append(len(requests))
        out = []
        for s in range(0, len(requests), 3):
            part = requests[s : s + 3]
            if any(r.sample_id == self.bad for r in part):
                raise ValueError(f"cannot decode image of {self.bad}")
            texts = super().generate(part)
            out += texts
            if on_batch is not None:
                lines = self.cache_file.read_text().splitlines() if self.cache_file.exists() else []
                self.saved_at_report.append(len(lines))
                on_batch(list(range(s, s + len(part))), texts)
        return out


def test_auto_hands_the_model_its_call_size_and_saves_each_batch(tmp_path):
    specs = Registry().select("vqav2_mini")
    out = tmp_path / "a"
    model = Streaming(PREDS, out / "samples" / "vqav2_mini.jsonl")
    data = Runner(model, RunSettings(output=out, progress=False, model_spec="replay")).run(specs)
    assert model.calls == [10, 8]  # batch_size None ("auto"): the model's call_size per call, not 8 or 64
    assert model.saved_at_report == [0, 3, 6, 9, 10, 13, 16]  # each batch was on disk before the next finished
    full = Runner(KilledAfter(PREDS), RunSettings(output=tmp_path / "b", batch_size=4, progress=False,
                                                  model_spec="replay")).run(specs)
    assert strip_volatile(data) == strip_volatile(full)


def test_a_failing_request_in_a_streamed_call_is_recorded_alone(tmp_path):
    specs = Registry().select("vqav2_mini")
    out = tmp_path / "a"
    bad = str(json.loads(PREDS.read_text())[4]["question_id"])
    model = Streaming(PREDS, out / "samples" / "vqav2_mini.jsonl", bad=bad)
    data = Runner(model, RunSettings(output=out, progress=False, model_spec="replay")).run(specs)
    task = data["tasks"]["vqav2_mini"]
    assert task["n_samples"] == 18 and task["n_errors"] == 1
    rows = [json.loads(x) for x in (out / "samples" / "vqav2_mini.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in rows if r.get("error")] == [bad]
    assert "cannot decode image" in next(r["error"] for r in rows if r.get("error"))
