"""A/B timing of engine options on one model in one process, variants interleaved round by
round, so a busy machine slows every variant alike and the ratios stay meaningful (absolute
figures do not). Each variant's outputs are checked equal to the first variant's.

    python benchmarks/ab_engine.py [--config benchmarks/configs/small_cpu.json] [--requests 64]
        [--rounds 3] [--tasks vqav2_val --data-dir benchmarks/data]

Variants: the default engine; vocab_tile=8192 (vocab.py); static_decode (static_decode.py,
eager on CPU); image_workers=0 (images decoded inline, no prefetch).
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

VARIANTS = {
    "default": {},
    "vocab_tile=8192": {"vocab_tile": 8192},
    "static_decode": {"static_decode": True},
    "image_workers=0": {"image_workers": 0},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="benchmarks/configs/small_cpu.json")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tasks", default=None)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()

    import torch

    from evalkit.models.qwen_vl.bench import _load, synthetic_requests, task_requests
    from evalkit.models.qwen_vl.engine import QwenVLEngine
    from evalkit.models.qwen_vl.engine_types import EngineConfig

    load_args = SimpleNamespace(config=args.config, model=None, tokenizer=None, dtype=None, device="cpu",
                                compile=False, static_decode=False, dry_run=False, seed=0)
    model, _ = _load(load_args, "auto")
    if args.tasks:
        requests = task_requests(args.tasks, args.data_dir, args.requests, model.prompt_style)
    else:
        requests = synthetic_requests(args.requests, max(1, args.requests // 4), 10, model.processor.image_size, 0)
    engines = {name: QwenVLEngine(model.model, model.processor, EngineConfig(**opts))
               for name, opts in VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    outputs: dict[str, list[str]] = {}
    for eng in engines.values():
        eng.generate(requests[:2])  # warm-up
    for _ in range(args.rounds):
        for name, eng in engines.items():
            eng.features.clear()
            started = time.perf_counter()
            outputs[name] = eng.generate(requests)
            times[name].append(time.perf_counter() - started)
    print(f"{len(requests)} requests, {args.rounds} rounds interleaved, torch threads {torch.get_num_threads()}")
    base = statistics.median(times["default"])
    for name, ts in times.items():
        same = outputs[name] == outputs["default"]
        print(f"  {name:18s} median {statistics.median(ts):7.2f}s  min {min(ts):7.2f}s  "
              f"{base / statistics.median(ts):5.2f}x default  outputs equal: {same}")


if __name__ == "__main__":
    main()
