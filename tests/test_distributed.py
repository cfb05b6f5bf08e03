"""`torchrun --nproc-per-node 2 -m evalkit run` (gloo on CPU) gives the single-process results byte for byte,
resumes across world sizes without losing or repeating a sample, and stops all ranks together.

Catalog fixture tasks run with the replay model (a VQA, a grounding and a log-likelihood choice
task); the bundled tiny Qwen-VL runs the bad-data task, so sharding also meets real decoding and
per-sample errors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import TINY_CKPT
from fixtures import cli_runs
from fixtures.bad_data import DECODE_ERRORS, ROW_ERRORS, make_bad_task

from evalkit.results.runs import SampleCache

TASKS, replay_argv = cli_runs.TASKS, cli_runs.replay_argv


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    return cli_runs.reference_run(tmp_path_factory.mktemp("single"))


def test_two_ranks_equal_one_process(single, tmp_path):
    out = tmp_path / "run"
    proc = cli_runs.ok(replay_argv(out, batch_size=1), tmp_path, ranks=2)
    cli_runs.assert_same_results(out, single)
    assert cli_runs.load(out)["timing"]["world_size"] == 2
    assert proc.stdout.count("results:") == 1  # rank 0 alone prints the table


def test_two_ranks_qwen_vl_with_bad_samples(tmp_path):
    task = make_bad_task(tmp_path / "data")
    argv = ["run", "--model", f"qwen-vl:{TINY_CKPT}", "--tasks", task.name, "--tasks-dir", str(task.tasks_dir),
            "--no-progress", "--batch-size", "3", "--device", "cpu", "--dtype", "fp32"]
    cli_runs.ok([*argv, "-o", str(tmp_path / "one")], tmp_path)
    cli_runs.ok([*argv, "-o", str(tmp_path / "two")], tmp_path, ranks=2)
    cli_runs.assert_same_results(tmp_path / "two", tmp_path / "one")
    preds = SampleCache(tmp_path / "two" / "samples" / f"{task.name}.jsonl").read_finished()
    assert {p.sample_id for p in preds if p.error} == DECODE_ERRORS | ROW_ERRORS
    assert all(p.output for p in preds if not p.error)  # the tiny model answered every decodable sample


@pytest.mark.parametrize("first, then", [(1, 2), (2, 1)])
def test_resume_across_world_sizes_computes_each_sample_once(single, tmp_path, first, then):
    """A run killed at its second batch (on every rank), resumed with another number of ranks."""
    out, log = tmp_path / "run", tmp_path / "computed.log"
    partial = cli_runs.run(replay_argv(out), tmp_path, faults=["--kill", "batch:2", "--log", str(log)], ranks=first)
    assert partial.returncode != 0 and not (out / "run.json").exists()
    left = sorted(p.name for p in (out / "samples").iterdir())
    assert left == (["okvqa_val.rank0.jsonl", "okvqa_val.rank1.jsonl"] if first == 2 else ["okvqa_val.jsonl"])
    cli_runs.ok(replay_argv(out), tmp_path, faults=["--log", str(log)], ranks=then)
    cli_runs.assert_same_results(out, single)  # merged in dataset order, rank files gone
    counts = cli_runs.computed(log)
    assert set(counts) == cli_runs.every_sample(single) and set(counts.values()) == {1}


def test_max_errors_stops_every_rank_with_one_message(tmp_path):
    task = make_bad_task(tmp_path / "data")  # the replay model fails only the row without an image
    argv = ["run", "--model", f"replay:{task.predictions}", "--tasks", task.name, "--tasks-dir", str(task.tasks_dir),
            "-o", str(tmp_path / "run"), "--no-progress", "--batch-size", "2", "--max-errors", "0"]
    proc = cli_runs.run(argv, tmp_path, ranks=2)
    assert proc.returncode != 0
    assert proc.stderr.count("evalkit: error: task bad_vqa: 1 samples failed, more than --max-errors 0") == 2
    assert "Connection closed" not in proc.stderr and "[rank0]: Traceback" not in proc.stderr  # nobody left hanging


def test_ctrl_c_under_torchrun_stops_all_ranks_after_their_batch(single, tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it."""
    out = tmp_path / "run"
    cmd = cli_runs.evalkit(replay_argv(out, batch_size=1), faults=["--delay", "0.5"], ranks=2)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_runs.env(["--delay", "0.5"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    files = [out / "samples" / f"okvqa_val.rank{rank}.jsonl" for rank in (0, 1)]
    deadline = time.time() + cli_runs.TIMEOUT
    while not all(f.exists() for f in files) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # into the second batch's half second
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=cli_runs.TIMEOUT)
    assert proc.returncode != 0
    assert err.count("evalkit: error: stopped during okvqa_val; re-run the same command to resume") == 2
    saved = [len(SampleCache(f).read_finished()) for f in files]  # whole lines only, nothing torn
    assert saved[0] == saved[1] and 1 <= saved[0] < 3  # both ranks stopped after the same batch, before the end
    cli_runs.ok(replay_argv(out), tmp_path)
    cli_runs.assert_same_results(out, single)


# -- backend and device per rank (issue 22: nccl only where each local rank has its own GPU) ------
@pytest.mark.parametrize("gpus, local_world, device, backend, devices", [
    (0, "2", None, "gloo", [None, None]),  # CPU
    (2, "2", None, "nccl", ["cuda:0", "cuda:1"]),  # a GPU per rank
    (1, "2", None, "gloo", ["cuda:0", "cuda:0"]),  # two ranks on one GPU: nccl would fail, cuda:1 does not exist
    (1, None, None, "gloo", ["cuda:0", "cuda:0"]),  # SLURM, one visible device per task, no LOCAL_WORLD_SIZE
    (8, "8", None, "nccl", ["cuda:0", "cuda:1"]),
    (4, "8", None, "gloo", ["cuda:0", "cuda:1"]),  # fewer GPUs than ranks: shared round-robin
    (2, "2", "cpu", "gloo", [None, None]),  # --device cpu on a GPU machine
])
def test_backend_and_device_per_rank(monkeypatch, gpus, local_world, device, backend, devices):
    import torch

    from evalkit.distributed import Dist

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.delenv("EVALKIT_DIST_BACKEND", raising=False)
    if local_world is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
    ranks = [Dist(rank=r, world_size=8 if gpus == 8 or local_world == "8" else 2, local_rank=r) for r in (0, 1)]
    assert [d.backend(device) for d in ranks] == [backend, backend]
    assert [d.device() if device is None else None for d in ranks] == devices


def test_backend_can_be_forced(monkeypatch):
    import torch

    from evalkit.distributed import Dist, DistributedError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("EVALKIT_DIST_BACKEND", "gloo")
    assert Dist(rank=1, world_size=2, local_rank=1).backend() == "gloo"
    monkeypatch.setenv("EVALKIT_DIST_BACKEND", "mpi")
    with pytest.raises(DistributedError, match="EVALKIT_DIST_BACKEND='mpi': use one of nccl, gloo"):
        Dist(rank=1, world_size=2, local_rank=1).backend()


@pytest.mark.parametrize("requested, expected", [(None, "cuda:1"), ("cuda", "cuda:1"), ("cpu", "cpu"), ("cuda:0", "cuda:0")])
def test_rank_device_is_this_ranks_gpu_unless_one_is_named(monkeypatch, requested, expected):
    """`evalkit run` and the lmms-eval plugin share this rule: no device or plain cuda is the rank's own GPU."""
    import torch

    from evalkit.distributed import Dist

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert Dist(rank=1, world_size=2, local_rank=1).rank_device(requested) == expected
    assert Dist().rank_device(requested) == requested  # one process: the device as asked
