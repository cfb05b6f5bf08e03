"""What the engine is told (EngineConfig) and what it counts (EngineStats): the nouns engine.py
and scheduler.py share, in a module of their own so neither imports the other for them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class EngineConfig:
    """How the engine batches. `batch_size=None` is "auto": the largest batch memory allows
    (at most `max_batch_size`), halved on out-of-memory."""

    batch_size: int | None = None
    max_batch_size: int = 256
    cpu_max_batch_size: int = 64  # past this a CPU gains nothing (measured: 128 is no faster on the small config)
    vision_batch_size: int = 16
    prefill_tokens: int | None = None  # tokens per prefill chunk; None: 1024 on CPU, 32768 on GPU
    feature_cache_bytes: int = 2 << 30
    compile: bool = False  # torch.compile the vision tower and MLPs (shape-dynamic)
    vocab_tile: int | None = None  # greedy pick over vocabulary tiles of this many rows, logits never whole (vocab.py)
    static_decode: bool = False  # fixed-shape decode step, one CUDA graph per batch on CUDA (static_decode.py)
    image_workers: int | None = None  # threads decoding the next batch's images; None: the spare cores, 0: inline

    def prefill_chunk(self, device: torch.device) -> int:
        """Tokens per prefill chunk: activations stay cache-sized on a CPU, small on a GPU."""
        if self.prefill_tokens:
            return self.prefill_tokens
        return 32768 if device.type == "cuda" else 1024


@dataclass
class EngineStats:
    """Counters and phase timings (seconds) since the engine was built or `reset_stats()`."""

    requests: int = 0
    batches: int = 0
    images_encoded: int = 0
    image_cache_hits: int = 0
    prompt_tokens: int = 0
    padded_prompt_tokens: int = 0
    generated_tokens: int = 0
    decode_steps: int = 0
    decode_row_steps: int = 0
    vision_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    oom_backoffs: int = 0
    batch_sizes: list[int] = field(default_factory=list)

    # the work a batch did; an attempt that ran out of memory is taken back out, so that
    # `evalkit bench`'s hardware limit counts each request's work once
    WORK = ("prompt_tokens", "padded_prompt_tokens", "generated_tokens", "decode_steps", "decode_row_steps")

    def work(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.WORK}
