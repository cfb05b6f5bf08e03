"""Crash safety: `evalkit run` SIGKILLed at chosen points (between batches, mid-append, around every atomic
write), killed from outside at an arbitrary moment, or Ctrl-C'd; re-running the same command must give
the uninterrupted run's results byte for byte, with every sample computed once, and no torn or corrupt
file may ever be read as valid.

The exact kill points come from tests/fault_worker.py (a real SIGKILL the process sends itself at a
wrapped function); the arbitrary one is sent by the test to the real CLI running the tiny Qwen-VL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import TINY_CKPT
from fixtures import cli_runs
from fixtures.catalog import DATA, PREDS

from evalkit.cli import main
from evalkit.models.replay import ReplayModel
from evalkit.registry import Registry
from evalkit.results.runs import RunError, SampleCache, load_run
from evalkit.runner import Runner, RunSettings

TASKS, BATCH, argv = cli_runs.TASKS, cli_runs.BATCH, cli_runs.replay_argv


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return cli_runs.reference_run(tmp_path_factory.mktemp("reference"))


# point -> what the killed run must have left behind
KILL_POINTS = {
    "replace:manifest.json": "nothing yet: the first manifest never landed",
    "batch:1": "a manifest and no sample",
    "append:2": "a torn line: half of the second batch",
    "replace:okvqa_val.jsonl": "a full temp copy of the final okvqa_val.jsonl, not renamed",
    "replaced:okvqa_val.jsonl": "okvqa_val.jsonl final, refcoco_val not started",
    "batch:4": "okvqa_val final, killed at refcoco_val's batch",
    "replace:run.json": "every samples file final, run.json's temp file written in full, not renamed",
    "replaced:run.json": "a finished run",
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_then_rerun_gives_identical_results(point, reference, tmp_path):
    out, log = tmp_path / "run", tmp_path / "computed.log"
    killed = cli_runs.run(argv(out), tmp_path, faults=["--kill", point, "--log", str(log)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    finished = point == "replaced:run.json"
    assert (out / "run.json").exists() == finished
    if not finished:
        with pytest.raises(RunError, match="does not exist"):
            load_run(out)
    if point == "append:2":
        assert not (out / "samples" / "okvqa_val.jsonl").read_bytes().endswith(b"\n")
    if point.startswith("replace:") and point != "replace:manifest.json":
        assert list(out.rglob(f".{point.split(':')[1]}.*.tmp"))  # the interrupted atomic write's temp file

    cli_runs.ok(argv(out), tmp_path, faults=["--log", str(log)])
    cli_runs.assert_same_results(out, reference)  # and no temp file left
    counts = cli_runs.computed(log)
    assert set(counts) == cli_runs.every_sample(reference)
    repeated = {key for key, n in counts.items() if n > 1}
    if point == "append:2":  # the torn batch, and only it, is computed again
        assert len(repeated) <= BATCH and all(task == "okvqa_val" for task, _ in repeated)
    else:
        assert not repeated


def test_sigkill_from_outside_at_an_arbitrary_moment_with_qwen_vl(tmp_path):
    """The real CLI on the real model, killed whenever its cache has reached 3 lines, then resumed."""
    args = ["run", "--model", f"qwen-vl:{TINY_CKPT}", "--tasks", "vqav2_mini", "--limit", "10",
            "--batch-size", "1", "--no-progress"]
    cli_runs.ok([*args, "-o", str(tmp_path / "full")], tmp_path)
    out = tmp_path / "killed"
    cache = out / "samples" / "vqav2_mini.jsonl"
    proc = subprocess.Popen(cli_runs.evalkit([*args, "-o", str(out)]), cwd=tmp_path, env=cli_runs.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (cache.exists() and cache.read_bytes().count(b"\n") >= 3):
        time.sleep(0.002)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL  # it was still running: the kill landed mid-run
    assert not (out / "run.json").exists()
    assert 3 <= len(SampleCache(cache).load()) < 10
    cli_runs.ok([*args, "-o", str(out)], tmp_path)
    cli_runs.assert_same_results(out, tmp_path / "full")


def test_ctrl_c_finishes_the_batch_then_stops(reference, tmp_path):
    out = tmp_path / "run"
    faults = ["--delay", "0.4"]
    proc = subprocess.Popen(cli_runs.evalkit(argv(out, batch_size=1), faults), cwd=tmp_path,
                            env=cli_runs.env(faults), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cache = out / "samples" / "okvqa_val.jsonl"
    deadline = time.time() + cli_runs.TIMEOUT
    while proc.poll() is None and not cache.exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=cli_runs.TIMEOUT)
    assert proc.returncode == 2
    assert "interrupt: finishing the current batch (Ctrl-C again to abort now)" in err
    assert err.rstrip().endswith("evalkit: error: stopped during okvqa_val; re-run the same command to resume")
    assert "Traceback" not in err
    assert 1 <= len(SampleCache(cache).read_finished()) < 5  # whole lines only, and it stopped early
    assert not (out / "run.json").exists()
    cli_runs.ok(argv(out), tmp_path)
    cli_runs.assert_same_results(out, reference)


# ---------------------------------------------------------------- damaged files, in process


class Counting(ReplayModel):
    def __init__(self, path):
        super().__init__(path)
        self.seen: list[str] = []

    def generate(self, requests):
        self.seen += [r.sample_id for r in requests]
        return super().generate(requests)


def resume_in_process(out: Path) -> list[str]:
    """Re-run TASKS[0] into `out` in this process; the sample ids the model was asked for."""
    model = Counting(PREDS)
    settings = RunSettings(output=out, batch_size=BATCH, progress=False, data_dir=str(DATA), model_spec=f"replay:{PREDS}")
    Runner(model, settings).run(Registry().select(TASKS[0]))
    return model.seen


@pytest.fixture
def one_task(tmp_path) -> Path:
    out = tmp_path / "ref"
    resume_in_process(out)
    return out


@pytest.mark.parametrize("cut", ["half", "newline"])
def test_torn_last_line_is_dropped_and_recomputed(one_task, tmp_path, cut):
    """A cache whose last line lost its second half (or only its newline) after two whole lines."""
    lines = (one_task / "samples" / "okvqa_val.jsonl").read_bytes().splitlines(keepends=True)
    torn = lines[2][: len(lines[2]) // 2] if cut == "half" else lines[2][:-1]
    out = tmp_path / "resumed"
    (out / "samples").mkdir(parents=True)
    (out / "manifest.json").write_bytes((one_task / "manifest.json").read_bytes())
    (out / "samples" / "okvqa_val.jsonl").write_bytes(b"".join(lines[:2]) + torn)
    ids = [json.loads(line)["sample_id"] for line in lines]
    assert resume_in_process(out) == ids[2:]  # the torn one is redone, the whole ones are not
    assert (out / "samples" / "okvqa_val.jsonl").read_bytes() == b"".join(lines)
    assert cli_runs.stable(cli_runs.load(out)) == cli_runs.stable(cli_runs.load(one_task))


@pytest.mark.parametrize("damage", ["torn tail", "missing newline", "garbage line", "not a prediction"])
def test_finished_samples_file_damaged_is_an_error_never_fewer_samples(one_task, damage):
    file = one_task / "samples" / "okvqa_val.jsonl"
    data = file.read_bytes()
    lines = data.splitlines(keepends=True)
    damaged = {
        "torn tail": data[:-20],
        "missing newline": data[:-1],
        "garbage line": b"".join([*lines[:2], b"\x00\xffgarbage\n", *lines[2:]]),
        "not a prediction": b"".join([*lines[:1], b'["sample_id", "task"]\n', *lines[1:]]),
    }[damage]
    file.write_bytes(damaged)
    with pytest.raises(RunError, match=r"okvqa_val\.jsonl: line \d+ is torn or corrupt"):
        load_run(one_task).samples("okvqa_val")
    assert file.read_bytes() == damaged  # reading never rewrites a finished run


def test_corrupt_run_json_is_never_read_and_a_rerun_repairs_it(one_task, capsys):
    run_json = one_task / "run.json"
    good = run_json.read_bytes()
    run_json.write_bytes(good[: len(good) // 2])
    with pytest.raises(RunError, match="not valid JSON"):
        load_run(one_task)
    assert main(["compare", str(one_task), str(one_task)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert resume_in_process(one_task) == []  # every sample is cached: nothing recomputed
    assert cli_runs.stable(json.loads(run_json.read_bytes())) == cli_runs.stable(json.loads(good))


def test_corrupt_manifest_is_one_clear_error(one_task, capsys):
    (one_task / "manifest.json").write_text('{"model": ', encoding="utf-8")
    code = main(["run", "--model", f"replay:{PREDS}", "--tasks", TASKS[0], "--data-dir", str(DATA),
                 "-o", str(one_task), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("evalkit: error:") and "manifest.json is corrupt" in err
