"""A/B timing of the model's modules against an earlier commit's code, in one process.

The baseline's language.py and vision.py are loaded from git (`--base`, default HEAD) next to
the working tree's, both get the same weights, and each case runs old and new alternately for
`--rounds` rounds. Printed per case: the medians (wall time and this thread's CPU time) and
old/new, and whether the outputs (and written K/V) are bitwise equal. On a shared machine the
CPU time at one thread (the default) is the steadier figure: it does not count the time the
thread waits for a core, which is most of the wall time when other jobs run.

    python benchmarks/ab_ops.py [--base REV] [--rounds 7] [--threads 1] [--cases vision,prefill,decode]

Cases (small config, benchmarks/configs/small_cpu.json):
  vision   the vision tower over 16 images of 448 px (one engine vision batch)
  vit      the ViT's blocks alone over [16, 1024, 256]
  prefill  the 4 decoder blocks over one prefill chunk of 3 x 277 tokens into a static cache
  decode   the 4 decoder blocks for one decode step at batch 64 after 287 cached positions
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from evalkit.models.qwen_vl import language, vision
from evalkit.models.qwen_vl.config import QwenVLConfig
from evalkit.models.qwen_vl.kv_cache import StaticKVCache
from evalkit.models.qwen_vl.modeling import QwenVLTransformer

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "benchmarks" / "configs" / "small_cpu.json"


def module_at(rev: str, name: str) -> ModuleType:
    """evalkit/models/qwen_vl/<name>.py as it is at git revision `rev`, as a fresh module."""
    source = subprocess.run(["git", "show", f"{rev}:evalkit/models/qwen_vl/{name}.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader(f"ab_base_{name}", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and annotations look the module up by name
    exec(compile(source, f"{rev}:{name}.py", "exec"), module.__dict__)
    return module


def decoder_case(lang: ModuleType, blocks: torch.nn.ModuleList, config: QwenVLConfig, batch: int,
                 past: int, length: int, seed: int) -> Callable[[], list[torch.Tensor]]:
    """Run `blocks` over `length` new tokens per row after `past` cached ones, as QwenVLTransformer does."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, config.hidden_size, generator=gen)
    cache = StaticKVCache.empty(config, batch, past + length, torch.float32, "cpu")
    cache.k.normal_(generator=gen)
    cache.v.normal_(generator=gen)
    total = past + length
    positions = torch.arange(past, total).expand(batch, -1)
    alphas = torch.ones(batch, dtype=torch.float64)
    cos, sin = lang.rotary_cos_sin(positions, alphas, config.rotary_dim, config.rotary_emb_base)
    key_index = torch.arange(total)
    causal = key_index[None, :] <= (past + torch.arange(length))[:, None]
    mask = causal[None, None].expand(batch, 1, -1, -1)

    def run() -> list[torch.Tensor]:
        cache.length = past
        x = hidden
        for block in blocks:
            x = block(x, cos, sin, None, mask, cache)
        return [x, cache.k, cache.v]  # the cache is compared too (not copied: the timing stays the step's)

    return run


def build_cases(base: str, names: list[str]) -> dict[str, tuple[Callable, Callable]]:
    config = QwenVLConfig.from_dict(json.loads(CONFIG.read_text()))
    old_lang, old_vis = module_at(base, "language"), module_at(base, "vision")
    torch.manual_seed(0)
    new_tower = vision.VisionTransformer(**config.visual).eval()
    for p in new_tower.parameters():
        p.data.normal_(0, 0.05)
    old_tower = old_vis.VisionTransformer(**config.visual).eval()
    old_tower.load_state_dict(new_tower.state_dict())
    new_blocks = QwenVLTransformer(config).h.eval()
    for p in new_blocks.parameters():
        p.data.normal_(0, 0.05)
    old_blocks = torch.nn.ModuleList(old_lang.QwenBlock(config, i) for i in range(config.num_hidden_layers))
    old_blocks.load_state_dict(new_blocks.state_dict())
    old_blocks.eval()

    gen = torch.Generator().manual_seed(1)
    pixels = torch.randn(16, 3, 448, 448, generator=gen)
    patches = torch.randn(16, 1024, 256, generator=gen)
    cases: dict[str, tuple[Callable, Callable]] = {}
    if "vision" in names:
        cases["vision"] = (lambda: [old_tower(pixels)], lambda: [new_tower(pixels)])
    if "vit" in names:
        cases["vit"] = (lambda: [old_tower.transformer(patches)], lambda: [new_tower.transformer(patches)])
    shapes = {"prefill": (3, 0, 277), "decode": (64, 287, 1)}
    for name, (batch, past, length) in shapes.items():
        if name in names:
            cases[name] = (decoder_case(old_lang, old_blocks, config, batch, past, length, 2),
                           decoder_case(language, new_blocks, config, batch, past, length, 2))
    return cases


def timed(fn: Callable[[], list[torch.Tensor]]) -> tuple[float, float, list[torch.Tensor]]:
    wall, cpu = time.perf_counter(), time.thread_time()
    out = fn()
    return time.perf_counter() - wall, time.thread_time() - cpu, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="HEAD", help="git revision of the old code (default HEAD)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cases", default="vision,prefill,decode")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cases = build_cases(args.base, args.cases.split(","))
    print(f"old = {args.base}, new = working tree; {args.rounds} rounds, torch threads {args.threads}")
    with torch.inference_mode():
        for name, (old, new) in cases.items():
            old(), new()  # warm-up
            walls: dict[str, list[float]] = {"old": [], "new": []}
            cpus: dict[str, list[float]] = {"old": [], "new": []}
            equal = True
            for r in range(args.rounds):
                order = [("old", old), ("new", new)] if r % 2 == 0 else [("new", new), ("old", old)]
                outs = {}
                for which, fn in order:
                    wall, cpu, outs[which] = timed(fn)
                    walls[which].append(wall)
                    cpus[which].append(cpu)
                equal = equal and all(map(torch.equal, outs["old"], outs["new"]))
            w = {k: statistics.median(v) * 1e3 for k, v in walls.items()}
            c = {k: statistics.median(v) * 1e3 for k, v in cpus.items()}
            print(f"  {name:8s} wall old {w['old']:8.1f} ms new {w['new']:8.1f} ms ({w['old'] / w['new']:4.2f}x)  "
                  f"cpu old {c['old']:8.1f} ms new {c['new']:8.1f} ms ({c['old'] / c['new']:4.2f}x)  "
                  f"bitwise equal: {equal}")


if __name__ == "__main__":
    main()
