"""Which requests run together and how many: batches sorted by prompt length, the auto batch
size from free memory, and the out-of-memory back-off.

Sorting by prompt length keeps a left-padded batch's padding small; questions on one image
travel together. `batch_size=None` ("auto") is sized once per call from what memory allows
(memory the caching allocator holds but does not use counts as free); an out-of-memory halves
the batch and retries the same requests, so nothing is lost, and the halved size holds for the
rest of that task only.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from evalkit.models.qwen_vl.config import QwenVLConfig
from evalkit.models.qwen_vl.engine_types import EngineConfig, EngineStats
from evalkit.models.qwen_vl.feature_cache import FeatureCache
from evalkit.models.qwen_vl.kv_cache import StaticKVCache
from evalkit.task import ImageRef, Request

T = TypeVar("T")
OnBatch = Callable[[list[int], list[Any]], None]  # (request indices, their results) as each batch finishes


@dataclass
class TokenizedRequest:
    """A request tokenized: prompt ids and its images in `<img>` order."""

    ids: list[int]
    images: list[ImageRef]
    request: Request


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, or the CPU allocator's failure (a RuntimeError naming the allocation)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def batch_memory(
    config: QwenVLConfig,
    dtype: torch.dtype,
    longest: int,
    extra: int,
    fan_out: int = 0,
    images: int = 0,
    new_images: int = 0,
    prefill_tokens: int = 1024,
    cache_room: int = 0,
) -> tuple[int, int]:
    """(fixed bytes, bytes per request) of one engine batch: what the auto batch size divides
    free memory by.

    Per request: its KV cache at the `longest` prompt + `extra` tokens, and the copy
    `select_rows` makes beside it (dropping finished rows: at most half as much again; fanning a
    prompt out to `fan_out` choices: one more row per choice); its `images` features stacked for
    the batch; and the vocabulary logits. Generating, one row of logits with its float32 max;
    scoring choices, the prompt's float32 log-softmax, its copy per choice, and per choice token
    the model-dtype logits, their float32 copy and log-softmax ([R, L, V]: about 35 GB for 200
    requests x 4 choices x 29 tokens at Qwen-VL's 151,936-token vocabulary).
    Fixed: one prefill chunk's activations and masked attention scores, and the features of the
    call's `new_images` that the feature cache can still take (`cache_room` bytes)."""
    c = config
    elt = torch.empty((), dtype=dtype).element_size()
    kv = StaticKVCache.bytes_per_row(c, dtype, longest + extra)
    vocab = c.vocab_size
    feature = c.visual["n_queries"] * c.hidden_size * elt
    if fan_out:
        tokens = max(extra - 1, 0)  # choice tokens fed through the model after the prompt
        kv_bytes = kv * (1 + fan_out)
        logits = (elt + 8) * vocab + fan_out * (4 * vocab + (elt + 8) * tokens * vocab)
    else:
        kv_bytes = kv * 3 // 2
        logits = (4 + elt + 1) * vocab
    per_request = kv_bytes + logits + images * feature
    activations = prefill_tokens * (4 * c.hidden_size + 2 * c.intermediate_size + 3 * c.hidden_size) * elt
    attention = c.num_attention_heads * prefill_tokens * longest * 4  # masked fallback score matrix
    return activations + attention + min(cache_room, new_images * feature), per_request


class Scheduler:
    """Cuts a call's requests into batches and runs them; owns the per-task back-off. Reads the
    engine's `config` as it is at each call (bench changes its batch size between runs)."""

    def __init__(self, config: EngineConfig, model_config: QwenVLConfig, dtype: torch.dtype, device: torch.device,
                 features: FeatureCache):
        self.config, self.model_config, self.dtype, self.device = config, model_config, dtype, device
        self.features = features
        self.backoff: dict[tuple[str, ...], int] = {}  # task(s) -> batch size after an out-of-memory

    def run(
        self,
        prepared: list[TokenizedRequest],
        extra_len: Callable[[list[TokenizedRequest]], int],
        run_batch: Callable[[list[TokenizedRequest]], list[T]],
        stats: EngineStats,
        fan_out: int = 0,
        on_batch: OnBatch | None = None,
        prefetch: Callable[[list[TokenizedRequest], list[TokenizedRequest]], None] | None = None,
    ) -> list[T]:
        """Sort by prompt length (then image, so questions on one image travel together), cut
        into batches, run each; on out-of-memory halve the batch size and retry the same rows.
        `fan_out`: the most choices a request has (0 when generating), for the auto size;
        `prefetch(batch, next batch)` as each batch starts.

        The batch size is decided once per call (auto: from free memory, which shrinks as the
        caching allocator keeps blocks, so it is not re-measured per batch); a halved size
        holds for later calls of the same task, and a new task starts from the full size."""
        order = sorted(
            range(len(prepared)), key=lambda i: (len(prepared[i].ids), [im.key for im in prepared[i].images])
        )
        task = tuple(sorted({p.request.task for p in prepared}))
        size = self.config.batch_size or self.auto_batch_size(prepared, extra_len(prepared), fan_out)
        size = min(size, self.backoff.get(task, size))
        results: list[Any] = [None] * len(prepared)
        start = 0
        while start < len(order):
            chunk = order[start : start + size]
            batch = [prepared[i] for i in chunk]
            if prefetch is not None:
                prefetch(batch, [prepared[i] for i in order[start + size : start + 2 * size]])
            work = stats.work()
            try:
                outputs = run_batch(batch)
            except Exception as exc:
                if not is_out_of_memory(exc) or len(chunk) == 1:
                    raise
                outputs = None  # handled below: once this handler and its traceback are gone
            if outputs is None:  # out of memory; the failed batch's tensors are unreachable now
                size = self.backoff[task] = max(len(chunk) // 2, 1)
                stats.__dict__.update(work)
                stats.oom_backoffs += 1
                self.release_memory()
                continue
            stats.batches += 1
            stats.requests += len(chunk)
            stats.batch_sizes.append(len(chunk))
            for i, out in zip(chunk, outputs):
                results[i] = out
            if on_batch is not None:
                on_batch(chunk, outputs)
            start += len(chunk)
        return results

    def auto_batch_size(self, prepared: list[TokenizedRequest], extra: int, fan_out: int = 0) -> int:
        """Requests that fit in ~70% of free memory (see `batch_memory`). Capped, at least 1."""
        cap = self.config.max_batch_size
        if self.device.type != "cuda":
            cap = min(cap, self.config.cpu_max_batch_size)
        longest = max(len(p.ids) for p in prepared)
        new_images = {im.key for p in prepared for im in p.images if im.key not in self.features}
        fixed, per_request = batch_memory(
            self.model_config, self.dtype, longest, extra, fan_out,
            images=max(len(p.images) for p in prepared), new_images=len(new_images),
            prefill_tokens=min(max(self.config.prefill_chunk(self.device), longest), longest * cap),
            cache_room=max(self.config.feature_cache_bytes - self.features.bytes, 0),
        )
        return int(max(1, min(cap, (0.7 * self.free_memory() - fixed) // per_request)))

    def free_memory(self) -> int:
        """Bytes a batch can use: on CUDA what the driver has free plus what the caching
        allocator has reserved but not handed out (mem_get_info alone counts the latter as used,
        so a second sizing would shrink); on CPU the available physical memory."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

    def release_memory(self) -> None:
        """Hand the failed batch's blocks back to the device. Called once its tensors are
        unreachable (outside the except block that held its traceback), or it frees nothing."""
        gc.collect()  # tensors caught in reference cycles through frames
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
