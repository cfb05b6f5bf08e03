"""Where the engine's time goes, by torch op: torch.profiler around one `generate` on the
small config's synthetic workload (after a warm-up), printing the top ops by self CPU time.

    python benchmarks/profile_engine.py [--config benchmarks/configs/small_cpu.json] [--requests 64] [--top 30]
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="benchmarks/configs/small_cpu.json")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--shapes", action="store_true", help="group by input shapes too")
    args = p.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from evalkit.models.qwen_vl.bench import _load, synthetic_requests

    load_args = SimpleNamespace(config=args.config, model=None, tokenizer=None, dtype=None, device="cpu",
                                compile=False, static_decode=False, dry_run=False, seed=0)
    model, _ = _load(load_args, "auto")
    requests = synthetic_requests(args.requests, max(1, args.requests // 4), 10, model.processor.image_size, 0)
    engine = model.engine
    engine.generate(requests[:2])  # warm-up
    engine.features.clear()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        engine.generate(requests)
    table = prof.key_averages(group_by_input_shape=args.shapes)
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40))


if __name__ == "__main__":
    main()
