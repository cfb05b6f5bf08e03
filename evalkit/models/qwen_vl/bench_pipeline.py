"""`evalkit bench --tasks`: the same requests through `evalkit run`'s whole pipeline next to the
engine alone, and where the difference goes.

The pipeline is the real Runner (dataset loading, image references, prompt building, the model
calls as `evalkit run` makes them, per-batch saving, scoring and the result files) writing into
a temporary run folder; its phase timer (evalkit/timing.py) splits the wall time. Each run
starts with a cold feature cache, as a fresh `evalkit run` does.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

PHASES = ("data", "prompts", "model", "save", "score")


def set_batch_size(model, batch_size: int | None) -> None:
    """The harness and engine at a fixed batch size, or "auto" (None)."""
    model.batch_size = batch_size or 8
    model.engine.config.batch_size = batch_size


def run_pipeline(model, tasks: str, data_dir: str | None, limit: int, batch_size: int | None) -> dict[str, Any]:
    """`evalkit run --tasks TASKS --limit LIMIT [--batch-size N]` on `model`, timed by phase."""
    from evalkit.registry import Registry
    from evalkit.runner import Runner, RunSettings

    specs = [s for s in Registry().select(tasks) if s.output_type == "generate"]
    set_batch_size(model, batch_size)
    model.engine.features.clear()
    model.engine.images.clear()
    model.engine.reset_stats()
    try:
        with tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp:
            settings = RunSettings(output=Path(tmp) / "run", limit=limit, data_dir=data_dir, batch_size=batch_size,
                                   progress=False, model_spec="bench")
            runner = Runner(model, settings)
            started = time.perf_counter()
            data = runner.run(specs)
            seconds = time.perf_counter() - started
    finally:
        set_batch_size(model, None)
    n = sum(t["n_samples"] for t in data["tasks"].values()) if data else 0
    phases = {p: runner.phases.seconds.get(p, 0.0) for p in PHASES}
    stats = model.engine.stats
    return {
        "batch_size": batch_size or "auto",
        "requests": n,
        "errors": sum(t["n_errors"] for t in data["tasks"].values()) if data else 0,
        "seconds": seconds,
        "samples_per_s": n / seconds if seconds else 0.0,
        **{f"{p}_s": v for p, v in phases.items()},
        "other_s": seconds - sum(phases.values()),
        "engine_vision_s": stats.vision_s, "engine_prefill_s": stats.prefill_s, "engine_decode_s": stats.decode_s,
        "engine_batch_size": max(stats.batch_sizes, default=0),
        "images_encoded": stats.images_encoded,
    }


def compare(engine: dict[str, Any], pipeline: dict[str, Any]) -> dict[str, Any]:
    """Pipeline vs engine alone on the same requests: the overhead and what it is made of."""
    gap = pipeline["seconds"] - engine["seconds"]
    return {
        "pipeline_over_engine": pipeline["seconds"] / engine["seconds"] - 1,
        "gap_s": gap,
        "model_calls_vs_engine_s": pipeline["model_s"] - engine["seconds"],
        "outside_model_s": pipeline["seconds"] - pipeline["model_s"],
    }


def format_pipeline(engine: dict[str, Any], runs: list[dict[str, Any]], versus: dict[str, Any]) -> str:
    main = runs[0]
    lines = [
        "",
        f"evalkit run pipeline (batch {main['batch_size']}): {main['samples_per_s']:.3f} samples/s, "
        f"{main['seconds']:.2f}s for {main['requests']} requests vs engine alone {engine['seconds']:.2f}s "
        f"({100 * versus['pipeline_over_engine']:+.1f}%)",
        "  where the pipeline's time goes: " + ", ".join(f"{p} {main[p + '_s']:.2f}s" for p in PHASES)
        + f", other {main['other_s']:.2f}s",
        f"  model calls {main['model_s']:.2f}s vs engine alone {engine['seconds']:.2f}s "
        f"({versus['model_calls_vs_engine_s']:+.2f}s: batching and image work inside the calls); "
        f"outside the model {versus['outside_model_s']:.2f}s",
    ]
    if len(runs) > 1:
        best = max(runs, key=lambda r: r["samples_per_s"])
        lines.append("  pipeline by --batch-size: " + ", ".join(
            f"{r['batch_size']} {r['samples_per_s']:.3f}" for r in runs) + f" samples/s; default (auto) is "
            f"{100 * (main['samples_per_s'] / best['samples_per_s'] - 1):+.1f}% vs the best ({best['batch_size']})")
    return "\n".join(lines)
