"""The CUDA paths, on a GPU (`python -m pytest -m gpu`); skipped with the reason where none is visible.

What the README claims there: the engine's greedy outputs equal transformers `generate()` in fp32
with TF32 off and do not depend on the batch; in bf16 they agree within the stated tolerance;
`--batch-size auto` sizes from real free memory; an out-of-memory backs off and loses nothing;
torchrun works with two ranks on one GPU (gloo) and with a GPU per rank (nccl). The CPU suite
checks the same decisions with mocked CUDA counters; these check them on the device.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from conftest import TINY_CKPT
from fixtures import cli_runs
from fixtures.bad_data import make_bad_task
from test_qwen_vl_engine import CAPITAL, TEXTS, choice_requests, flat_scores, mixed_requests

from evalkit.cli import main
from evalkit.models.qwen_vl.adapter import QwenVLAdapter
from evalkit.models.qwen_vl.engine import QwenVLEngine
from evalkit.models.qwen_vl.engine_types import EngineConfig
from evalkit.task import Request

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is visible"),
]
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (nccl, a GPU per rank)")

# bf16 tolerance (README "Precision"): batch 1 against auto on the demo suite, first 50 test samples
# of each task. Measured on CPU bf16: 195 of 200 outputs identical, accuracies equal, CIDEr +0.23.
BF16_MIN_AGREEMENT = 0.90
BF16_MAX_ACCURACY_DIFF = 0.04  # two samples in 50
BF16_MAX_CIDER_DIFF = 0.5


@pytest.fixture(scope="module")
def cuda_fp32() -> QwenVLAdapter:
    return QwenVLAdapter.from_spec(str(TINY_CKPT), dtype="fp32", device="cuda", batch_size=4)


def test_loads_straight_onto_the_gpu_with_tf32_off(cuda_fp32):
    assert {p.device.type for p in cuda_fp32.model.parameters()} == {"cuda"}
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_engine_equals_generate_in_fp32(cuda_fp32, tiny_dir):
    reqs = mixed_requests(tiny_dir)
    model = cuda_fp32
    batch1 = QwenVLEngine(model.model, model.processor, EngineConfig(batch_size=1)).generate(reqs)
    assert len(set(batch1)) > 10
    model.backend = "hf"
    assert model.generate(reqs) == batch1  # transformers generate(), batches of 4
    model.backend = "fast"
    for size in (4, 32, None):  # None: auto
        assert QwenVLEngine(model.model, model.processor, EngineConfig(batch_size=size)).generate(reqs) == batch1
    choices = choice_requests(tiny_dir)
    fast = QwenVLEngine(model.model, model.processor, EngineConfig(batch_size=8)).loglikelihood(choices)
    assert flat_scores(fast)[0] == pytest.approx(flat_scores(model.loglikelihood_hf(choices))[0], abs=1e-4)


def test_auto_batch_size_from_real_memory_does_not_shrink(cuda_fp32):
    """Free memory as the engine counts it (driver-free plus reserved-but-unallocated) moves only with
    what is really allocated, though the caching allocator keeps blocks after a call."""
    eng = QwenVLEngine(cuda_fp32.model, cuda_fp32.processor, EngineConfig(batch_size=None))
    prepared = [eng._prepare(Request(f"r{i}", "t", [t], max_new_tokens=8)) for i, t in enumerate(TEXTS * 8)]
    torch.cuda.empty_cache()
    before = eng.scheduler.free_memory() + torch.cuda.memory_allocated()
    first = eng.scheduler.auto_batch_size(prepared, 8)
    reserved = torch.cuda.memory_reserved()
    eng.generate([p.request for p in prepared])
    assert torch.cuda.memory_reserved() > reserved  # blocks the driver now reports as used
    assert eng.scheduler.free_memory() + torch.cuda.memory_allocated() == pytest.approx(before, abs=64 << 20)
    assert eng.scheduler.auto_batch_size(prepared, 8) == first == eng.config.max_batch_size  # the tiny model: the cap


def test_out_of_memory_backs_off_and_loses_nothing(cuda_fp32):
    """A real CUDA out-of-memory: the allocator capped between what batch 2 and batch 32 need."""
    model, processor = cuda_fp32.model, cuda_fp32.processor
    long = " ".join(TEXTS * 30)
    reqs = [Request(f"r{i}", "t", [f"{i} {long}"], max_new_tokens=2) for i in range(32)]

    def peak(size: int) -> tuple[list[str], int]:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = QwenVLEngine(model, processor, EngineConfig(batch_size=size)).generate(reqs)
        return out, torch.cuda.max_memory_allocated() - base

    want, small = peak(2)
    assert peak(32)[0] == want
    big = peak(32)[1]
    if big < 3 * small:
        pytest.skip(f"batch 32 needs {big} bytes, batch 2 {small}: too close to place a cap between them")
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + (small + big) // 2) / total)
    try:
        eng = QwenVLEngine(model, processor, EngineConfig(batch_size=32))
        assert eng.generate(reqs) == want
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert eng.stats.oom_backoffs >= 1 and max(eng.stats.batch_sizes) < 32 and eng.stats.requests == 32


def test_bf16_batch_1_and_auto_agree_within_the_stated_tolerance(tmp_path):
    runs = {}
    for size in ("1", "auto"):
        out = tmp_path / size
        assert main(["run", "--model", "demo", "--tasks", "demo", "--device", "cuda", "--dtype", "bf16",
                     "--batch-size", size, "--limit", "50", "--no-progress", "-o", str(out)]) == 0
        runs[size] = out
    same = total = 0
    for path in sorted((runs["1"] / "samples").glob("*.jsonl")):
        one = [json.loads(line)["output"] for line in path.read_text().splitlines()]
        auto = [json.loads(line)["output"] for line in (runs["auto"] / "samples" / path.name).read_text().splitlines()]
        same, total = same + sum(a == b for a, b in zip(one, auto)), total + len(one)
    assert total == 200 and same / total >= BF16_MIN_AGREEMENT
    metrics = [json.loads((runs[s] / "run.json").read_text())["tasks"] for s in ("1", "auto")]
    for task, metric, tolerance in [("demo_vqa", "vqa_accuracy", BF16_MAX_ACCURACY_DIFF),
                                    ("demo_textvqa", "vqa_accuracy", BF16_MAX_ACCURACY_DIFF),
                                    ("demo_refcoco", "grounding_accuracy", BF16_MAX_ACCURACY_DIFF),
                                    ("demo_caption", "CIDEr", BF16_MAX_CIDER_DIFF)]:
        a, b = (m[task]["metrics"][metric]["value"] for m in metrics)
        assert abs(a - b) <= tolerance, (task, metric, a, b)


def test_bench_defaults_to_bf16_on_the_gpu(tmp_path):
    path = tmp_path / "figures.json"
    assert main(["bench", "--config", str(TINY_CKPT), "--requests", "8", "--images", "4", "--baseline-requests", "4",
                 "--baseline-batch-sizes", "2", "--json", str(path)]) == 0
    figures = json.loads(path.read_text())
    assert figures["dtype"] == "bfloat16" and not figures["device"].startswith("cpu")
    engine = figures["engine"]
    assert engine["vision_s"] > 0 and engine["vision_s"] + engine["prefill_s"] + engine["decode_s"] <= engine["seconds"]


def gpu_env() -> dict[str, str]:
    """cli_runs' environment with the GPUs visible and the backend evalkit's own choice."""
    env = cli_runs.env()
    for name in ("CUDA_VISIBLE_DEVICES", "EVALKIT_DIST_BACKEND"):
        env.pop(name)
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def two_rank_run(tmp_path, env: dict[str, str]) -> None:
    """The bad-data task on the tiny model on CUDA fp32: two ranks give the one-process results."""
    task = make_bad_task(tmp_path / "data")
    argv = ["run", "--model", f"qwen-vl:{TINY_CKPT}", "--tasks", task.name, "--tasks-dir", str(task.tasks_dir),
            "--no-progress", "--batch-size", "3", "--dtype", "fp32"]
    for out, ranks in (("one", 1), ("two", 2)):
        proc = subprocess.run(cli_runs.evalkit([*argv, "-o", str(tmp_path / out)], ranks=ranks), cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=cli_runs.TIMEOUT)
        assert proc.returncode == 0, proc.stderr[-3000:]
    cli_runs.assert_same_results(tmp_path / "two", tmp_path / "one")


def test_two_ranks_on_one_gpu_use_gloo(tmp_path):
    """Two ranks, one visible GPU: both on cuda:0 with gloo (nccl fails there, cuda:1 does not exist)."""
    env = gpu_env()
    env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    two_rank_run(tmp_path, env)


@two_gpus
def test_two_ranks_with_a_gpu_each_use_nccl(tmp_path):
    from evalkit.distributed import Dist

    os.environ["LOCAL_WORLD_SIZE"] = "2"
    try:
        assert Dist(rank=0, world_size=2, local_rank=0).backend() == "nccl"
    finally:
        del os.environ["LOCAL_WORLD_SIZE"]
    two_rank_run(tmp_path, gpu_env())


def test_cuda_engine_is_batch_invariant_for_a_repeated_prompt(cuda_fp32):
    """The same prompt in a batch of different lengths: every copy gets the batch-1 output."""
    eng = QwenVLEngine(cuda_fp32.model, cuda_fp32.processor, EngineConfig(batch_size=16))
    reqs = [Request("a", "t", [CAPITAL], max_new_tokens=12)] + [Request(f"p{i}", "t", [t], max_new_tokens=12)
                                                                 for i, t in enumerate(TEXTS)]
    alone = QwenVLEngine(cuda_fp32.model, cuda_fp32.processor, EngineConfig(batch_size=1)).generate(reqs[:1])
    assert eng.generate(reqs)[0] == alone[0]
