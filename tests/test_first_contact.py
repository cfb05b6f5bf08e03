"""A new user's everyday mistakes (issue 17): each ends in one clear line and a non-zero exit, or is
done right; none runs silently into a wrong or lost result. Each test runs the command."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

import pytest

from evalkit.cli import build_parser, main
from evalkit.data import load_samples
from evalkit.registry import Registry

REPO = Path(__file__).resolve().parents[1]


def one_line_error(err: str, *needles: str) -> str:
    """The last stderr line is the error; there is exactly one such line and no traceback."""
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert lines and "Traceback" not in err, err
    assert sum("error:" in x for x in lines) == 1, err
    line = lines[-1]
    assert "error:" in line and all(n in line for n in needles), line
    return line


def replay_dir(root: Path, tasks: dict[str, int | None], answer=None) -> Path:
    """Predictions in evalkit's own jsonl for the demo tasks: the first N samples of each (None: all),
    the gold answer unless `answer` says otherwise."""
    root.mkdir(parents=True, exist_ok=True)
    for task, n in tasks.items():
        samples = load_samples(Registry().get(task))[:n]
        lines = []
        for s in samples:
            gold = s.fields.get("box_answer") or (s.references[0] if isinstance(s.references, list) else "")
            text = answer(s) if answer else gold
            lines.append(json.dumps({"sample_id": s.id, "task": task, "output": str(text)}))
        (root / f"{task}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def run_json(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def no_model_load(monkeypatch) -> None:
    """Any weight load fails the test: what is checked must be checked before the model loads."""
    from evalkit.models.qwen_vl.adapter import QwenVLAdapter

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(QwenVLAdapter, "from_spec", classmethod(refuse))


# ------------------------------------------------------------------ flags


def test_no_flag_abbreviations_anywhere(tmp_path, capsys):
    parser, _ = build_parser()
    subparsers = parser.get_default("subparsers")
    assert parser.allow_abbrev is False and subparsers
    assert all(p.allow_abbrev is False for p in subparsers.values())
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--shot", "2", "-o", str(tmp_path / "r")])
    assert exit_.value.code == 2
    one_line_error(capsys.readouterr().err, "evalkit run: error: unrecognized arguments: --shot 2", "did you mean --shots?")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, message", [
    (["--limit", "-1"], "argument --limit: must be a positive integer, got -1"),
    (["--limit", "0"], "argument --limit: must be a positive integer, got 0"),
    (["--dtype", "fp64"], "argument --dtype: invalid dtype 'fp64'; use fp32, bf16 or fp16"),
    (["--device", "gpu"], "argument --device: invalid device 'gpu'"),
    (["--max-errors", "-3"], "argument --max-errors: must be >= 0"),
])
def test_bad_flag_values_fail_at_parse_time(argv, message, tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--tasks", "demo_vqa", "-o", str(tmp_path / "r"), *argv])
    assert exit_.value.code == 2
    one_line_error(capsys.readouterr().err, message)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a torch without CUDA")
def test_device_cuda_without_cuda_is_one_line_before_the_model(tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    assert main(["run", "--tasks", "demo_vqa", "--device", "cuda", "-o", str(tmp_path / "r")]) == 2
    one_line_error(capsys.readouterr().err, "--device cuda:", "without CUDA", "use --device cpu")


# ------------------------------------------------------------------ output folders


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in: a read-only one, or (as root, whom modes do not stop)
    /sys, which refuses new files to everyone."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            fd, name = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(fd)
        os.unlink(name)
    pytest.skip("no unwritable folder here")


def test_unwritable_output_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    locked = unwritable_folder(tmp_path)
    no_model_load(monkeypatch)
    target = locked / "run"
    assert main(["run", "--tasks", "demo_vqa", "-o", str(target)]) == 2
    one_line_error(capsys.readouterr().err, f"--output {target}: cannot write in {locked}")

    preds = replay_dir(tmp_path / "preds", {"demo_vqa": 3})
    ok = tmp_path / "ok"
    assert main(["run", "--model", f"replay:{preds}", "--tasks", "demo_vqa", "--limit", "3", "-o", str(ok)]) == 0
    capsys.readouterr()
    page = locked / "report.html"
    assert main(["report", str(ok), "-o", str(page)]) == 2
    one_line_error(capsys.readouterr().err, f"--output {page}: cannot write in {locked}")
    table = locked / "table.md"
    assert main(["compare", str(ok), str(ok), "-o", str(table)]) == 2
    one_line_error(capsys.readouterr().err, f"--output {table}: cannot write in {locked}")


# ------------------------------------------------------------------ the run folder


def test_second_command_keeps_earlier_results_and_refuses_to_shrink_one(tmp_path, capsys):
    preds = replay_dir(tmp_path / "preds", {"demo_vqa": None, "demo_textvqa": None})
    out = tmp_path / "r"
    base = ["run", "--model", f"replay:{preds}", "-o", str(out)]
    assert main([*base, "--tasks", "demo_vqa", "--limit", "6"]) == 0
    assert main([*base, "--tasks", "demo_textvqa", "--shots", "2", "--limit", "4"]) == 0
    printed = capsys.readouterr().out
    data = run_json(out)
    assert set(data["tasks"]) == {"demo_vqa", "demo_textvqa_2shot"}  # the first result is still there
    assert data["tasks"]["demo_vqa"]["n_samples"] == 6 and data["tasks"]["demo_vqa"]["limit"] == 6
    assert data["tasks"]["demo_textvqa_2shot"]["limit"] == 4
    assert data["settings"]["tasks"] == ["demo_vqa", "demo_textvqa"] and data["settings"]["shots"] == [0, 2]
    assert "also holds 1 earlier result(s): demo_vqa" in printed

    assert main([*base, "--tasks", "demo_vqa", "--limit", "8"]) == 0  # extending a result is fine
    assert run_json(out)["tasks"]["demo_vqa"]["n_samples"] == 8
    capsys.readouterr()
    assert main([*base, "--tasks", "demo_vqa", "--limit", "3"]) == 2  # shrinking it would drop 5 samples
    one_line_error(capsys.readouterr().err, "demo_vqa already has 8 samples", "--limit 3",
                   "run with the earlier --limit (or none), or use another --output folder")
    assert run_json(out)["tasks"]["demo_vqa"]["n_samples"] == 8

    (out / "samples" / "demo_textvqa_2shot.jsonl").unlink()  # a result whose samples are gone is dropped
    assert main([*base, "--tasks", "demo_vqa", "--limit", "8"]) == 0
    assert set(run_json(out)["tasks"]) == {"demo_vqa"}


def test_finished_command_rerun_loads_no_model_and_rescores_nothing(tmp_path, capfd, monkeypatch):
    out = tmp_path / "r"
    argv = ["run", "--tasks", "demo_vqa", "--limit", "3", "-o", str(out)]
    assert main(argv) == 0
    first = capfd.readouterr()
    assert "warning" not in first.err  # the demo model on a demo task
    import evalkit.runner

    no_model_load(monkeypatch)
    monkeypatch.setattr(evalkit.runner, "score_task", lambda *a, **k: pytest.fail("rescored"))
    started = time.time()
    assert main(argv) == 0
    again = capfd.readouterr()
    assert "demo_vqa: 3/3 samples cached" in again.err
    table = [x for x in again.out.splitlines() if x.startswith("demo_vqa")]
    assert table and table == [x for x in first.out.splitlines() if x.startswith("demo_vqa")]
    assert time.time() - started < 60


# ------------------------------------------------------------------ silent scores


def test_replay_with_missing_predictions_says_how_many(tmp_path, capsys):
    preds = replay_dir(tmp_path / "preds", {"demo_vqa": 30})
    out = tmp_path / "r"
    assert main(["run", "--model", f"replay:{preds}", "--tasks", "demo_vqa", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "warning (demo_vqa): 70 of 100 samples failed (70 had no prediction in the replayed file)" in printed
    entry = run_json(out)["tasks"]["demo_vqa"]
    assert entry["n_errors"] == 70 and entry["error_kinds"] == {"MissingPrediction": 70}
    assert main(["run", "--model", f"replay:{preds}", "--tasks", "demo_vqa", "-o", str(tmp_path / "r2"),
                 "--max-errors", "10"]) == 2
    one_line_error(capsys.readouterr().err, "more than --max-errors 10")


def test_cider_subset_note_only_on_a_subset(tmp_path, capsys):
    preds = replay_dir(tmp_path / "preds", {"demo_caption": 3})
    assert main(["run", "--model", f"replay:{preds}", "--tasks", "demo_caption", "--limit", "3",
                 "-o", str(tmp_path / "r")]) == 0
    assert "note (demo_caption): CIDEr uses document frequencies" in capsys.readouterr().out
    assert run_json(tmp_path / "r")["tasks"]["demo_caption"]["subset"] is True
    # (a full run prints no such note: test_tasks_catalog runs every captioning fixture whole)


def test_prompts_longer_than_the_context_are_refused(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "--tasks", "demo_vqa", "--shots", "99", "--limit", "2", "-o", str(out)]) == 2
    line = one_line_error(capsys.readouterr().err, "demo_vqa_99shot: no prompt fits the model's context",
                          "longer than the model's context of 8192 tokens", "use fewer --shots")
    assert re.search(r"the prompt is \d{5} tokens", line)
    assert not (out / "run.json").exists()


def test_a_prompt_longer_than_the_context_is_that_sample_s_error(tmp_path):
    """Only some prompts too long: those samples fail with the reason, never reach the model, and the rest run."""
    from evalkit.models.replay import ReplayModel
    from evalkit.runner import Runner, RunSettings

    preds = replay_dir(tmp_path / "preds", {"demo_vqa": 6})
    long_ids = {s.id for s in load_samples(Registry().get("demo_vqa"))[1:3]}

    class ShortContext(ReplayModel):
        asked: list[str] = []

        def context_error(self, request):
            return "too long for this test" if request.sample_id in long_ids else None

        def generate(self, requests):
            self.asked += [r.sample_id for r in requests]
            return super().generate(requests)

    model = ShortContext(preds)
    data = Runner(model, RunSettings(output=tmp_path / "r", limit=6, progress=False)).run(Registry().select("demo_vqa"))
    entry = data["tasks"]["demo_vqa"]
    assert entry["n_errors"] == 2 and entry["error_kinds"] == {"ContextOverflow": 2}
    assert not long_ids & set(model.asked) and len(model.asked) == 4
    errors = [json.loads(x) for x in (tmp_path / "r" / "samples" / "demo_vqa.jsonl").read_text().splitlines()]
    assert [e["error"] for e in errors if e.get("error")] == ["ContextOverflow: too long for this test"] * 2


def test_demo_model_on_a_real_benchmark_warns(tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)  # the data check fails first here: the warning still comes before it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["run", "--tasks", "vqav2_val", "--limit", "1", "--data-dir", str(tmp_path / "data"),
                 "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "warning: the demo model (a tiny model trained on the synthetic demo suite) is run on vqav2_val" in err
    one_line_error(err, "dataset lmms-lab-encoder/VQAv2 is not available")


# ------------------------------------------------------------------ offline hub


def test_unreachable_hub_is_detected_fast_with_paths_and_download_command(tmp_path, capsys, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    from evalkit.data import offline

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "ds-cache")
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    data = tmp_path / "data"
    started = time.time()
    assert main(["run", "--model", "replay:/nowhere.jsonl", "--tasks", "vqav2_val", "--data-dir", str(data),
                 "-o", str(tmp_path / "r")]) == 2
    assert time.time() - started < 20  # no half minute of retries
    line = one_line_error(capsys.readouterr().err, "http://127.0.0.1:9 cannot be reached",
                          f"no local copy at {data / 'lmms-lab-encoder' / 'VQAv2'}")
    cli = offline.hub_cli()
    assert f"`{cli} download --repo-type dataset lmms-lab-encoder/VQAv2 --local-dir {data}/lmms-lab-encoder/VQAv2`" in line
    assert datasets.config.HF_HUB_OFFLINE is False  # offline mode was only for that load


def test_download_command_is_the_installed_hub_cli():
    from importlib.metadata import distribution

    from evalkit.data.offline import hub_cli

    scripts = {e.name for e in distribution("huggingface_hub").entry_points if e.group == "console_scripts"}
    assert hub_cli() in scripts


# ------------------------------------------------------------------ bench


def test_bench_with_a_tokenizer_of_another_model_is_one_line(capsys):
    config = REPO / "benchmarks" / "configs" / "small_cpu.json"
    vocab = REPO / "evalkit" / "demo" / "assets" / "model" / "qwen.tiktoken"
    assert main(["bench", "--config", str(config), "--tokenizer", str(vocab), "--requests", "2", "--no-baseline"]) == 2
    one_line_error(capsys.readouterr().err, f"tokenizer {vocab} does not match {config}",
                   "its <img> is token 659, the config's image_start_id is 151857")


# ------------------------------------------------------------------ noise


def test_library_chatter_only_with_verbose(tmp_path, capfd, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "ds-cache")  # fresh: "Generating" would print
    preds = replay_dir(tmp_path / "preds", {"demo_caption": 2})
    assert main(["run", "--tasks", "demo_vqa", "--limit", "1", "-o", str(tmp_path / "a")]) == 0
    assert main(["run", "--model", f"replay:{preds}", "--tasks", "demo_caption", "--limit", "2",
                 "-o", str(tmp_path / "b")]) == 0
    quiet = capfd.readouterr().err
    for chatter in ("Loading weights", "Generating test split", "PTBTokenizer tokenized"):
        assert chatter not in quiet
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "ds-cache-2")
    assert main(["run", "--tasks", "demo_vqa", "--limit", "1", "-o", str(tmp_path / "c"), "--verbose"]) == 0
    assert main(["run", "--model", f"replay:{preds}", "--tasks", "demo_caption", "--limit", "2",
                 "-o", str(tmp_path / "d"), "--verbose"]) == 0
    loud = capfd.readouterr().err
    for chatter in ("Loading weights", "Generating test split", "PTBTokenizer tokenized"):
        assert chatter in loud
