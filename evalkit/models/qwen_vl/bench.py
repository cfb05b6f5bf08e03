"""`evalkit bench`: throughput of the Qwen-VL engine against transformers `generate()`.

One run measures, on the same weights and the same requests, back to back:
the engine (all requests), `generate()` at batch 1 and `generate()` at each candidate batch
size (on a subset: batch-1 generate is slow, and its per-request cost does not depend on how
many requests there are). It prints samples/s, generated tokens/s, the engine's
vision/prefill/decode split, peak memory, the speedups, and the fraction of the hardware limit
the engine reaches, measured on this machine: the best of several large matmuls gives the peak
FLOP/s and of several rounds of large copies the memory bandwidth (their spread is printed). The limit counts the work that is really needed: the vision
tower once per distinct image, 2 x params x tokens for the prompt (logits at its last
position only), and per decode step the larger of its FLOPs and its weight bytes over the
bandwidth.

Models: `--model qwen-vl:PATH` (a checkpoint) or `--config DIR|FILE` (a config.json; random
weights, no download), e.g. benchmarks/configs/small_cpu.json on CPU or
benchmarks/configs/qwen_vl_real.json (real size) on a GPU; both find the real
qwen.tiktoken beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.results.tables import text_table

WORDS = ("what", "color", "is", "the", "shirt", "of", "man", "on", "left", "side", "picture", "near", "red",
         "bus", "how", "many", "people", "are", "standing", "in", "front", "this", "old", "building", "there",
         "a", "dog", "sitting", "grass")


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="qwen-vl:PATH, a checkpoint directory")
    p.add_argument("--config", default=None,
                   help="a Qwen-VL config.json (or its directory) to benchmark with random weights instead")
    p.add_argument("--tokenizer", default=None,
                   help="qwen.tiktoken for --config (default: the one beside the config file)")
    p.add_argument("--tasks", default=None,
                   help="take requests from these tasks (their data must be available) instead of the "
                        "synthetic VQA workload")
    p.add_argument("--data-dir", default=None, help="directory with local copies of datasets (--tasks)")
    p.add_argument("--pipeline-batch-sizes", default="",
                   help="with --tasks, also time the evalkit run pipeline at these --batch-size values "
                        "(e.g. 8,16,32,64) next to its default, auto")
    p.add_argument("--pipeline-rounds", type=int, default=1,
                   help="with --tasks, time the engine alone and each pipeline this many times, interleaved, "
                        "and report the medians (a busy machine slows all alike) (default 1)")
    p.add_argument("--requests", type=int, default=256, help="requests in the workload (default 256)")
    p.add_argument("--images", type=int, default=64, help="distinct images of the synthetic workload (default 64)")
    p.add_argument("--max-new-tokens", type=int, default=10,
                   help="new tokens per synthetic request, all generated (eos suppressed) (default 10)")
    p.add_argument("--batch-size", default="auto", help="engine batch size: int or auto (default auto)")
    p.add_argument("--baseline-requests", type=int, default=32,
                   help="requests (the workload's first N) the generate() baselines run (default 32)")
    p.add_argument("--baseline-batch-sizes", default="4,8,16,32",
                   help="generate() batch sizes tried for its best batch (default 4,8,16,32)")
    p.add_argument("--no-baseline", action="store_true", help="measure the engine only")
    p.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default bf16 on GPU, fp32 on CPU)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default cuda if available)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the vision tower and MLPs for the engine (the generate() baselines run uncompiled)")
    p.add_argument("--static-decode", action="store_true",
                   help="fixed-shape decode step, captured and replayed as a CUDA graph on CUDA (eager elsewhere)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and workload")
    p.add_argument("--dry-run", action="store_true",
                   help="build the model on the meta device (no memory, nothing run) and print its size: "
                        "checks a config, e.g. the real-size one, on any machine")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures to FILE as JSON")


# -- the model ---------------------------------------------------------------------------------
def _load(args: argparse.Namespace, batch_size: int | str):
    """(QwenVLAdapter, description). --config builds random weights in the target dtype on the device."""
    import torch

    from evalkit.models.base import ModelError
    from evalkit.models.qwen_vl.adapter import QwenVLAdapter, resolve_dtype
    from evalkit.models.qwen_vl.config import QwenVLConfig
    from evalkit.models.qwen_vl.engine_types import EngineConfig
    from evalkit.models.qwen_vl.modeling import QwenVLForCausalLM
    from evalkit.models.qwen_vl.processor import QwenVLProcessor
    from evalkit.models.qwen_vl.tokenizer import VOCAB_FILE, QwenTokenizer
    from evalkit.resources import user_path

    if args.dry_run and args.compile:
        raise ModelError("--compile has no effect with --dry-run (nothing runs)")
    device = "meta" if args.dry_run else args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_dtype(args.dtype, device)
    engine_config = EngineConfig(compile=args.compile, static_decode=args.static_decode)  # the engine's calls only
    if args.model:
        kind, _, path = args.model.partition(":")
        if kind != "qwen-vl" or not path:
            raise ModelError(f"bench measures qwen-vl:PATH models, got {args.model!r}")
        if args.dry_run:
            raise ModelError("--dry-run takes --config (the checkpoint's config.json), not --model")
        model = QwenVLAdapter.from_spec(path, dtype=args.dtype, device=device, batch_size=batch_size,
                                      engine_config=engine_config)
        return model, {"model": args.model, "weights": "checkpoint"}
    if not args.config:
        raise ModelError("bench needs --model qwen-vl:PATH or --config CONFIG (random weights)")
    config_file = user_path(args.config)  # the README's benchmarks/configs/... also from an installed wheel
    config_file = config_file / "config.json" if config_file.is_dir() else config_file
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: no such config file")
    try:
        config = QwenVLConfig.from_dict(json.loads(config_file.read_text()))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{config_file}: not a Qwen-VL config.json ({exc})") from exc
    candidates = [Path(args.tokenizer)] if args.tokenizer else [config_file.parent / VOCAB_FILE]
    vocab = next((c for c in candidates if c.is_file()), None)
    if vocab is None:
        raise ModelError(f"no tokenizer file: tried {', '.join(map(str, candidates))}; pass --tokenizer")
    tokenizer = QwenTokenizer(vocab)
    check_tokenizer(config, tokenizer, config_file, vocab)  # before building the weights
    torch.manual_seed(args.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype if dtype.is_floating_point else torch.float32)
    try:
        with torch.device(device):
            net = QwenVLForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    net = net.to(device=device, dtype=dtype).eval()
    processor = QwenVLProcessor(tokenizer, image_size=config.visual["image_size"])
    # a --config beside a checkpoint's weights names that checkpoint; otherwise the weights are these random ones
    weights = None if (config_file.parent / "config.json").is_file() else "random (evalkit bench --config)"
    model = QwenVLAdapter(net, processor, str(config_file.parent), batch_size, engine_config=engine_config,
                          weights=weights)
    return model, {"config": str(config_file), "weights": "random"}


def check_tokenizer(config: Any, tokenizer: Any, config_file: Path, vocab: Path) -> None:
    """A tokenizer of another model puts its `<img>` at an id the model does not treat as one (and may
    have more tokens than the model has embeddings): one line naming both files, not a shape error later."""
    from evalkit.models.base import ModelError

    problems = []
    if tokenizer.img_start_id != config.visual["image_start_id"]:
        problems.append(f"its <img> is token {tokenizer.img_start_id}, the config's image_start_id is "
                        f"{config.visual['image_start_id']}")
    if len(tokenizer) > config.vocab_size:
        problems.append(f"it has {len(tokenizer)} tokens, the config's vocab_size is {config.vocab_size}")
    if problems:
        raise ModelError(f"tokenizer {vocab} does not match {config_file}: {'; '.join(problems)}; "
                         "pass the qwen.tiktoken of that model with --tokenizer")


# -- the workload ------------------------------------------------------------------------------
def synthetic_requests(n: int, n_images: int, max_new: int, image_size: int, seed: int) -> list:
    """VQA-style requests ("<img>..</img>{question} Answer:"), request i on image i % n_images,
    questions of 6-16 words; all `max_new` tokens are generated (min_new_tokens = max_new)."""
    import numpy as np
    from PIL import Image

    from evalkit.task import ImageRef, Request

    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    images = [
        ImageRef.from_pil(Image.fromarray(gen.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)),
                          key=f"bench:{seed}:{j}")
        for j in range(n_images)
    ]
    out = []
    for i in range(n):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))).capitalize() + "?"
        out.append(Request(f"q{i}", "bench_vqa", ["<img>", images[i % n_images], f"</img>{question} Answer:"],
                           max_new_tokens=max_new, min_new_tokens=max_new))
    return out


def task_requests(names: str, data_dir: str | None, limit: int, style: str) -> list:
    from evalkit.data import load_samples
    from evalkit.prompts import build_request
    from evalkit.registry import Registry

    requests = []
    for spec in Registry().select(names):
        if spec.output_type != "generate":
            continue
        samples = load_samples(spec, data_dir)[:limit]
        requests += [build_request(spec, s, style) for s in samples if s.error is None]
    return requests[:limit]


# -- hardware ----------------------------------------------------------------------------------
def measure_hardware(device, dtype) -> dict[str, Any]:
    """Peak matmul FLOP/s and copy bandwidth (read + write), each the best of several timed runs
    after a warm-up, with the spread (worst / best) so a busy machine shows as a wide spread.
    One matmul gives the same code 46-62% "of the limit" from run to run; the best of several
    2048^3 matmuls (4096^3 on a GPU) is steady."""
    import torch

    cuda = device.type == "cuda"
    n = 4096 if cuda else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    repeat = 10 if cuda else 1
    flops = [repeat * 2 * n**3 / s for s in _timings(lambda: [a @ b for _ in range(repeat)], device, 7)]
    size = (1 << 30) if cuda else (1 << 27)  # bytes: far past the GPU's L2 / the CPU's caches
    src = torch.empty(size // 4, device=device, dtype=torch.float32).fill_(1)
    dst = torch.empty_like(src)
    copies = 10 if cuda else 2
    bandwidth = [2 * size * copies / s for s in _timings(lambda: [dst.copy_(src) for _ in range(copies)], device, 7)]
    return {"matmul_flops": max(flops), "bandwidth_bytes_s": max(bandwidth),
            "matmul_spread": min(flops) / max(flops), "bandwidth_spread": min(bandwidth) / max(bandwidth),
            "matmul_n": n, "runs": len(flops)}


def _timings(fn, device, runs: int) -> list[float]:
    """Seconds of each of `runs` calls of fn, after one untimed warm-up call."""
    fn()
    out = []
    for _ in range(runs):
        started = _sync_time(device)
        fn()
        out.append(_sync_time(device) - started)
    return out


def _sync_time(device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@dataclass
class Work:
    """The arithmetic a workload really needs (no padding, image once, last-position logits)."""

    vision_flops: float
    prefill_flops: float
    decode_flops: float
    decode_weight_bytes: float  # summed over decode steps (one weight read per step)


def needed_work(model, requests: list, engine_stats) -> Work:
    """From the model's parameter counts and the engine's counters."""
    net = model.model
    counts = net.parameter_counts()
    blocks, head = counts["blocks"], counts["lm_head"]
    per_image = net.flops_per_image()
    prompt_tokens = engine_stats.prompt_tokens
    prefill = 2 * blocks * prompt_tokens + 2 * head * len(requests)
    row_steps = engine_stats.generated_tokens - len(requests)  # tokens fed back through the model
    per_token = 2 * (blocks + head)
    elt = next(net.parameters()).element_size()
    decode = per_token * row_steps
    return Work(
        vision_flops=per_image * engine_stats.images_encoded,
        prefill_flops=prefill,
        decode_flops=decode,
        decode_weight_bytes=(blocks + head) * elt * engine_stats.decode_steps,
    )


# -- measuring ---------------------------------------------------------------------------------
def _peak_memory(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _timed(generate, requests: list, device) -> tuple[float, list[str]]:
    started = _sync_time(device)
    outputs = generate(requests)
    return _sync_time(device) - started, outputs


def run_engine(model, requests: list, device) -> dict[str, Any]:
    model.engine.features.clear()
    model.engine.generate(requests[:2])  # warm-up, then a cold feature cache for the measurement
    model.engine.features.clear()
    model.engine.reset_stats()
    _reset_peak(device)
    seconds, outputs = _timed(model.engine.generate, requests, device)
    stats = model.engine.stats
    return {
        "requests": len(requests),
        "seconds": seconds,
        "samples_per_s": len(requests) / seconds,
        "tokens_per_s": stats.generated_tokens / seconds,
        "generated_tokens": stats.generated_tokens,
        "vision_s": stats.vision_s,
        "prefill_s": stats.prefill_s,
        "decode_s": stats.decode_s,
        "other_s": seconds - stats.vision_s - stats.prefill_s - stats.decode_s,
        "images_encoded": stats.images_encoded,
        "prompt_tokens": stats.prompt_tokens,
        "padded_prompt_tokens": stats.padded_prompt_tokens,
        "batch_size": max(stats.batch_sizes, default=0),
        "batches": stats.batches,
        "oom_backoffs": stats.oom_backoffs,
        "peak_memory_gib": _peak_memory(device),
        "_outputs": outputs,
        "_stats": stats,
    }


def run_generate(model, requests: list, batch_size: int, device, tokens_per_request: float,
                 warm_up: bool = True) -> dict[str, Any]:
    """transformers generate() through the adapter's "hf" path; its outputs equal the engine's
    (checked), so its generated tokens are the engine's count per request."""
    model.batch_size = batch_size
    if warm_up:
        model.generate_hf(requests[:1])
    _reset_peak(device)
    seconds, outputs = _timed(model.generate_hf, requests, device)
    return {
        "requests": len(requests),
        "batch_size": batch_size,
        "seconds": seconds,
        "samples_per_s": len(requests) / seconds,
        "tokens_per_s": tokens_per_request * len(requests) / seconds,
        "peak_memory_gib": _peak_memory(device),
        "_outputs": outputs,
    }


def _sizes(args: argparse.Namespace) -> tuple[int | str, list[int]]:
    """The engine's batch size and the generate() baselines' batch sizes (1 first), checked."""
    from evalkit.models.base import ModelError

    try:
        batch_size: int | str = "auto" if args.batch_size == "auto" else int(args.batch_size)
        baseline = [int(b) for b in args.baseline_batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise ModelError(f"batch sizes are positive integers (or 'auto' for --batch-size), got "
                         f"--batch-size {args.batch_size!r} --baseline-batch-sizes {args.baseline_batch_sizes!r}"
                         ) from None
    if min([*baseline, 1 if batch_size == "auto" else batch_size]) < 1 or args.requests < 1:
        raise ModelError("batch sizes and --requests must be at least 1")
    return batch_size, [1] + [b for b in baseline if b != 1]


def cmd_bench(args: argparse.Namespace) -> int:
    """Throughput of the Qwen-VL engine vs transformers generate() (batch 1 and its best batch)."""
    import torch

    batch_size, baseline_sizes = _sizes(args)
    model, source = _load(args, batch_size)
    if args.dry_run:
        print(format_size(model_size(model.model), source))
        return 0
    device, dtype = model.model.device, model.model.dtype
    requests, workload = _workload(args, model)
    if not requests:
        print("evalkit: error: no requests to run", file=sys.stderr)
        return 2
    print(f"bench: {source}, {len(requests)} requests, device {device}, dtype {dtype}, "
          f"threads {torch.get_num_threads()}", flush=True)
    hardware = measure_hardware(device, dtype)
    engine = run_engine(model, requests, device)
    print(f"  engine: {engine['samples_per_s']:.3f} samples/s (batch {engine['batch_size']})", flush=True)
    pipeline = run_pipelines(args, model, engine, requests) if args.tasks else None
    subset = requests[: args.baseline_requests]
    per_request = engine["generated_tokens"] / len(requests)
    baselines = [] if args.no_baseline else run_baselines(model, subset, baseline_sizes, device, per_request)
    batch1 = baselines[0] if baselines else None
    best = max(baselines, key=lambda r: r["samples_per_s"]) if baselines else None
    agree = min((sum(a == b for a, b in zip(engine["_outputs"], g["_outputs"])) / len(subset) for g in baselines),
                default=None)
    peak, bw = hardware["matmul_flops"], hardware["bandwidth_bytes_s"]
    public = lambda d: {k: v for k, v in d.items() if not k.startswith("_")} if d else None  # noqa: E731
    result = {
        "engine": public(engine),
        "generate_batch1": public(batch1),
        "generate_best": public(best),
        "generate_all": [public(b) for b in baselines],
        "speedup_vs_batch1": engine["samples_per_s"] / batch1["samples_per_s"] if batch1 else None,
        "speedup_vs_best": engine["samples_per_s"] / best["samples_per_s"] if best else None,
        "outputs_agree_with_generate": agree,
        "limit": hardware_limit(needed_work(model, requests, engine["_stats"]), peak, bw, engine),
        "engine_batch1_decode": engine_batch1_decode(model, requests[:3], device, peak, bw),
        "pipeline": pipeline,
        "hardware": {"matmul_tflops": peak / 1e12, "bandwidth_gb_s": bw / 1e9,
                     "matmul_spread": hardware["matmul_spread"], "bandwidth_spread": hardware["bandwidth_spread"],
                     "matmul_n": hardware["matmul_n"], "runs": hardware["runs"]},
        "device": _device_name(device),
        "dtype": str(dtype).removeprefix("torch."),
        "config": {**source, **workload, "engine_batch_size": args.batch_size,
                   "baseline_requests": len(subset) if baselines else 0,
                   "baseline_batch_sizes": args.baseline_batch_sizes, "compile": args.compile,
                   "static_decode": args.static_decode,
                   "threads": torch.get_num_threads(), "seed": args.seed},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    print(format_table(result))
    if pipeline:
        from evalkit.models.qwen_vl.bench_pipeline import format_pipeline

        alone = {**result["engine"], "seconds": sorted(pipeline["engine_alone_seconds"])[
            (len(pipeline["engine_alone_seconds"]) - 1) // 2]}
        print(format_pipeline(alone, pipeline["runs"], pipeline))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


def run_pipelines(args: argparse.Namespace, model, engine: dict[str, Any], requests: list) -> dict[str, Any]:
    """`evalkit run` on the same tasks and requests: at its default (auto), then at each
    --pipeline-batch-sizes value; compared with the engine alone. With --pipeline-rounds N the
    engine alone and every pipeline run N times round-robin; each keeps its median run."""
    import statistics

    from evalkit.models.base import ModelError
    from evalkit.models.qwen_vl.bench_pipeline import compare, run_pipeline

    try:
        sizes = [int(b) for b in args.pipeline_batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise ModelError(f"--pipeline-batch-sizes takes integers, got {args.pipeline_batch_sizes!r}") from None
    if args.pipeline_rounds < 1:
        raise ModelError("--pipeline-rounds must be at least 1")
    alone = [engine["seconds"]]
    tried: dict[int | None, list[dict[str, Any]]] = {size: [] for size in [None, *sizes]}
    for round_ in range(args.pipeline_rounds):
        if round_:
            alone.append(run_engine(model, requests, model.model.device)["seconds"])
        for size, runs in tried.items():
            runs.append(run_pipeline(model, args.tasks, args.data_dir, args.requests, size))
            print(f"  evalkit run pipeline (batch {runs[-1]['batch_size']}): {runs[-1]['samples_per_s']:.3f} "
                  f"samples/s", flush=True)
    median = lambda runs: sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]  # noqa: E731
    chosen = [median(runs) for runs in tried.values()]
    reference = {**engine, "seconds": statistics.median_low(alone)}
    return {"runs": chosen, "rounds": args.pipeline_rounds, "engine_alone_seconds": alone,
            **compare(reference, chosen[0])}


def _workload(args: argparse.Namespace, model) -> tuple[list, dict[str, Any]]:
    if args.tasks:
        requests = task_requests(args.tasks, args.data_dir, args.requests, model.prompt_style)
        return requests, {"tasks": args.tasks, "requests": len(requests)}
    requests = synthetic_requests(args.requests, args.images, args.max_new_tokens, model.processor.image_size,
                                  args.seed)
    return requests, {"synthetic_vqa": True, "requests": len(requests), "images": args.images,
                      "max_new_tokens": args.max_new_tokens}


def run_baselines(model, subset: list, sizes: list[int], device, per_request: float) -> list[dict[str, Any]]:
    """generate() at each batch size (batch 1 first; sizes past the subset are skipped)."""
    runs: list[dict[str, Any]] = []
    for bs in sizes:
        if bs > len(subset) and bs != 1:
            continue
        runs.append(run_generate(model, subset, bs, device, per_request, warm_up=not runs))
        print(f"  generate() batch {bs}: {runs[-1]['samples_per_s']:.3f} samples/s ({len(subset)} requests)",
              flush=True)
    return runs


def hardware_limit(work: Work, peak: float, bw: float, engine: dict[str, Any]) -> dict[str, Any]:
    """The fastest this machine could run the needed work, and the fraction the engine reached,
    overall and per phase."""
    vision, prefill = work.vision_flops / peak, work.prefill_flops / peak
    decode = max(work.decode_flops / peak, work.decode_weight_bytes / bw)
    total, n = vision + prefill + decode, engine["requests"]
    fraction = lambda need, took: need / took if took else None  # noqa: E731
    return {
        "samples_per_s": n / total,
        "vision_s": vision, "prefill_s": prefill, "decode_s": decode,
        "gflop_per_request": (work.vision_flops + work.prefill_flops + work.decode_flops) / n / 1e9,
        "achieved_fraction": total / engine["seconds"],
        "vision_fraction": fraction(vision, engine["vision_s"]),
        "prefill_fraction": fraction(prefill, engine["prefill_s"]),
        "decode_fraction": fraction(decode, engine["decode_s"]),
        "decode_bound": "memory" if work.decode_weight_bytes / bw > work.decode_flops / peak else "compute",
    }


def engine_batch1_decode(model, requests: list, device, peak: float, bw: float) -> dict[str, float] | None:
    """The engine at batch 1 (a few requests): seconds per decode step against the step's limit,
    the larger of its weight bytes over the bandwidth and its FLOPs over the peak."""
    from dataclasses import replace

    from evalkit.models.qwen_vl.engine import QwenVLEngine

    engine = QwenVLEngine(model.model, model.processor, replace(model.engine.config, batch_size=1))
    engine.generate(requests)  # after run_engine: warm
    stats = engine.stats
    if not stats.decode_steps:
        return None
    net = model.model
    counts = net.parameter_counts()
    weights = counts["blocks"] + counts["lm_head"]
    step_limit = max(weights * next(net.parameters()).element_size() / bw, 2 * weights / peak)
    step = stats.decode_s / stats.decode_steps  # includes step 0's vocabulary projection: a slight over-count
    return {"requests": len(requests), "s_per_step": step, "limit_s_per_step": step_limit,
            "fraction": step_limit / step}


def model_size(net) -> dict[str, int]:
    """Parameter counts as the paper's Table 1 splits them, and the weight bytes."""
    counts = net.parameter_counts()
    return {**{k: counts[k] for k in ("vision", "adapter", "llm", "total")},
            "weight_bytes": sum(p.numel() * p.element_size() for p in net.parameters()),
            "dtype": str(next(net.parameters()).dtype).removeprefix("torch.")}


def format_size(size: dict[str, Any], source: dict[str, str]) -> str:
    billions = ", ".join(f"{k} {size[k] / 1e9:.2f}B" for k in ("vision", "adapter", "llm", "total"))
    return (f"dry run: {source.get('config', source.get('model'))} builds: {billions} parameters; "
            f"{size['weight_bytes'] / 2**30:.1f} GiB of weights in {size['dtype']}")


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def format_table(r: dict[str, Any]) -> str:
    e, b1, best, lim = r["engine"], r["generate_batch1"], r["generate_best"], r["limit"]
    rows = [("", "samples/s", "tokens/s", "batch", "requests", "peak GiB", "vs engine")]

    def row(name: str, d: dict[str, Any]) -> tuple:
        return (name, f"{d['samples_per_s']:.3f}", f"{d['tokens_per_s']:.1f}", str(d["batch_size"]),
                str(d["requests"]), f"{d['peak_memory_gib']:.2f}", f"{e['samples_per_s'] / d['samples_per_s']:.2f}x")

    rows.append(row("engine", e))
    if b1:
        rows.append(row("generate() batch 1", b1))
    if best:
        rows.append(row(f"generate() best (batch {best['batch_size']})", best))
    rows.append(("hardware limit", f"{lim['samples_per_s']:.3f}", "", "", "", "", ""))
    lines = [f"device {r['device']}, dtype {r['dtype']}", text_table(rows, numbers_right=True)]
    frac = lambda v: f"{100 * v:.0f}%" if v is not None else "-"  # noqa: E731
    lines += [
        "",
        f"engine time: vision {e['vision_s']:.2f}s ({e['images_encoded']} images), prefill {e['prefill_s']:.2f}s "
        f"({e['prompt_tokens']} tokens, {e['padded_prompt_tokens']} with padding), decode {e['decode_s']:.2f}s, "
        f"other {e['other_s']:.2f}s",
        f"hardware: {r['hardware']['matmul_tflops'] * 1e3:.1f} GFLOP/s matmul, "
        f"{r['hardware']['bandwidth_gb_s']:.1f} GB/s copy (best of {r['hardware']['runs']}; worst run "
        f"{100 * r['hardware']['matmul_spread']:.0f}% / {100 * r['hardware']['bandwidth_spread']:.0f}% of best); needed {lim['gflop_per_request']:.2f} GFLOP/request",
        f"achieved fraction of the limit: {frac(lim['achieved_fraction'])} overall (vision "
        f"{frac(lim['vision_fraction'])}, prefill {frac(lim['prefill_fraction'])}, decode "
        f"{frac(lim['decode_fraction'])}, decode is {lim['decode_bound']}-bound)",
    ]
    if r.get("engine_batch1_decode"):
        d = r["engine_batch1_decode"]
        lines.append(f"engine decode at batch 1: {1e3 * d['s_per_step']:.2f} ms/step, limit "
                     f"{1e3 * d['limit_s_per_step']:.2f} ms/step ({frac(d['fraction'])} of it)")
    if r["speedup_vs_batch1"] is not None:
        lines.append(f"speedup: {r['speedup_vs_batch1']:.2f}x vs generate() batch 1, "
                     f"{r['speedup_vs_best']:.2f}x vs its best batch")
        lines.append(f"baselines ran the first {b1['requests']} of the {e['requests']} requests; "
                     f"outputs equal to the engine's on {100 * r['outputs_agree_with_generate']:.0f}% of them"
                     + ("" if r["dtype"] == "float32" else
                        f" (in {r['dtype']} rounding depends on the batch shape; in float32 they are equal)"))
    return "\n".join(lines)
