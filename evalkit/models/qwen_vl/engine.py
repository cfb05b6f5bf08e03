"""Batched greedy generation and choice scoring for Qwen-VL: the fast path behind `qwen-vl:`.

The engine drives the model's own modules (`model.transformer`, `model.lm_head`,
`model.transformer.visual`): same weights, same math, so its outputs equal transformers
`generate()` on the same model. What it changes is the work around them:

- each distinct image (by `ImageRef.key`) goes through the vision tower once per run; its
  features sit in a byte-bounded LRU cache (VQAv2 asks ~5 questions per image);
- requests are sorted by prompt length, so a left-padded batch pads little, and prefilled
  into a static, pre-allocated KV cache (no per-step concatenation of the cache), a few
  thousand tokens at a time: the decode batch can be large (the vocabulary projection pays
  for it) while prefill activations stay cache-sized on a CPU and small on a GPU;
- vocabulary logits are computed for the last prompt position only;
- decode runs all rows of a batch in one forward per token; per-request stop (eos, stop
  strings, max_new_tokens, min_new_tokens) is tensor work, and the rows that finished are
  dropped from the cache once they are half of it (that is when dropping pays);
- stop strings are checked in Python only for rows whose new token can complete one (its
  bytes contain a stop string's last byte), so the per-token Python work does not grow with
  the batch;
- `batch_size=None` ("auto") is sized once per call from what memory allows (memory the
  caching allocator holds but does not use counts as free); an out-of-memory halves the batch
  and retries the same requests, so nothing is lost, and the halved size holds for the rest of
  that task only.

Positions come from each row's attention mask (language.py), so results do not depend on
the batch a request lands in or on the order of requests.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from evalkit.models.qwen_vl.config import QwenVLConfig
from evalkit.models.qwen_vl.language import ntk_alpha
from evalkit.models.qwen_vl.modeling import QwenVLForCausalLM
from evalkit.models.qwen_vl.prefetch import PixelPrefetcher, default_workers
from evalkit.models.qwen_vl.processor import QwenVLProcessor
from evalkit.models.qwen_vl.static_decode import StaticDecoder
from evalkit.models.qwen_vl.vocab import first_max_tiled
from evalkit.task import ChoiceScore, ImageError, ImageRef, Request

T = TypeVar("T")
OnBatch = Callable[[list[int], list[Any]], None]  # (request indices, their results) as each batch finishes


def split_stops(tokenizer: Any, stops: Sequence[str]) -> tuple[list[int], tuple[str, ...]]:
    """A request's stops as (token ids, text stops): a stop that is a special token (chat's
    `<|im_end|>`, `<|im_start|>`) stops on that id, as chat()'s stop_words_ids do -- it could
    never match the decoded text, from which special tokens are removed. `<|endoftext|>` first."""
    ids = [tokenizer.eod_id] + [tokenizer.special_tokens[s] for s in stops if s in tokenizer.special_tokens]
    return list(dict.fromkeys(ids)), tuple(s for s in stops if s and s not in tokenizer.special_tokens)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """`text` up to the first occurrence of any (non-empty) stop string."""
    cuts = [text.find(s) for s in stops if s and s in text]
    return text[: min(cuts)] if cuts else text


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
    feature = c.visual.get("n_queries", 256) * c.hidden_size * elt
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

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "batch_sizes"} | {
            "max_batch_size_used": max(self.batch_sizes, default=0)
        }


class FeatureCache:
    """LRU map ImageRef.key -> image features [Q, D], bounded by total bytes.

    A batch keeps its own references to the features it uses, so an eviction never takes
    features away from the batch in flight.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> torch.Tensor | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: torch.Tensor) -> None:
        if key in self._items:
            self.bytes -= self._nbytes(self._items.pop(key))
        self._items[key] = value
        self.bytes += self._nbytes(value)
        while self.bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self.bytes -= self._nbytes(old)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    @staticmethod
    def _nbytes(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()


class StaticKVCache:
    """Pre-allocated keys and values [layers, batch, heads, max_len, head_dim].

    Speaks the part of the transformers Cache interface the model uses: `get_seq_length()`
    and `update(k, v, layer_idx)`, which writes in place and returns views of the filled
    prefix (so attention costs what the sequence needs, not `max_len`). The last layer's
    update advances the length. `qwen_ntk_alpha` is set by the model at prefill.
    """

    def __init__(self, layers: int, batch: int, heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (layers, batch, heads, max_len, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.layers = layers
        self.length = 0
        self.qwen_ntk_alpha: torch.Tensor | None = None

    @classmethod
    def for_model(cls, model: QwenVLForCausalLM, batch: int, max_len: int) -> StaticKVCache:
        c = model.config
        return cls(c.num_hidden_layers, batch, c.num_attention_heads, max_len, c.head_dim, model.dtype, model.device)

    @staticmethod
    def bytes_per_row(config: QwenVLConfig, dtype: torch.dtype, max_len: int) -> int:
        elt = torch.empty((), dtype=dtype).element_size()
        return 2 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * max_len * elt

    def rows(self, start: int, end: int) -> StaticKVCache:
        """A cache over rows start:end that writes into this one's storage (chunked prefill)."""
        part = copy.copy(self)
        part.k, part.v = self.k[:, start:end], self.v[:, start:end]
        part.qwen_ntk_alpha = None
        return part

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.size(2)
        self.k[layer_idx, :, :, self.length : end] = k
        self.v[layer_idx, :, :, self.length : end] = v
        if layer_idx == self.layers - 1:
            self.length = end
        return self.k[layer_idx, :, :, :end], self.v[layer_idx, :, :, :end]

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep (or repeat) batch rows `index`: drops finished rows, fans a prompt out to its choices."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)
        if self.qwen_ntk_alpha is not None:
            self.qwen_ntk_alpha = self.qwen_ntk_alpha.index_select(0, index.cpu())


@dataclass
class Prepared:
    """A request tokenized: prompt ids and its images in `<img>` order."""

    ids: list[int]
    images: list[ImageRef]
    request: Request


def _engine_call(method: Callable[..., T]) -> Callable[..., T]:
    """A public engine call: runs with the engine's compiled modules in place (see `_compiled`)."""

    @functools.wraps(method)
    def call(self: QwenVLEngine, *args: Any, **kwargs: Any) -> T:
        with self._compiled():
            return method(self, *args, **kwargs)

    return call


class QwenVLEngine:
    """Batched greedy `generate` and choice `loglikelihood` over a QwenVLForCausalLM."""

    def __init__(self, model: QwenVLForCausalLM, processor: QwenVLProcessor, config: EngineConfig | None = None):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.config = config or EngineConfig()
        self.features = FeatureCache(self.config.feature_cache_bytes)
        self.stats = EngineStats()
        self._backoff: dict[tuple[str, ...], int] = {}  # task(s) -> batch size after an out-of-memory
        self._stop_tables: dict[tuple[str, ...], torch.Tensor] = {}
        self._token_bytes: list[bytes] | None = None
        self._visual: Callable[[torch.Tensor], torch.Tensor] = model.transformer.visual
        workers = self.config.image_workers
        self.images = PixelPrefetcher(processor.transform, default_workers(self.device) if workers is None else workers)
        self._compiled_mlps: list[torch.nn.Module] = []
        if self.config.compile:  # compiled copies, not the model's own modules: see _compiled()
            self._visual = torch.compile(model.transformer.visual, dynamic=True)
            self._compiled_mlps = [torch.compile(block.mlp, dynamic=True) for block in model.transformer.h]

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_stats(self) -> None:
        self.stats = EngineStats()

    @contextlib.contextmanager
    def _compiled(self) -> Iterator[None]:
        """With `compile`, the blocks run their compiled MLPs during the engine's own calls only:
        anything else driving the same model (generate(), the bench baselines) runs it as loaded."""
        if not self._compiled_mlps:
            yield
            return
        blocks = self.model.transformer.h
        originals = [block.mlp for block in blocks]
        try:
            for block, compiled in zip(blocks, self._compiled_mlps):
                block.mlp = compiled
            yield
        finally:
            for block, mlp in zip(blocks, originals):
                block.mlp = mlp

    # -- public calls ----------------------------------------------------------------------
    @torch.inference_mode()
    @_engine_call
    def generate(self, requests: Sequence[Request], on_batch: OnBatch | None = None) -> list[str]:
        """One greedy output per request, cut at its first stop string. `on_batch(indices,
        outputs)` is called as each batch finishes (so a caller can save results as they come)."""
        prepared = [self._prepare(r) for r in requests]
        return self._run_batched(prepared, lambda p: max(r.request.max_new_tokens for r in p), self._generate_batch,
                                 on_batch)

    @torch.inference_mode()
    @_engine_call
    def loglikelihood(self, requests: Sequence[Request], on_batch: OnBatch | None = None) -> list[list[ChoiceScore]]:
        """Summed log-probability of each choice's tokens after the prompt (prompt and choice
        tokenized separately, then concatenated, as eval_mm scores multiple choice). The prompt
        is prefilled once per request and its cache fanned out to the choices, except where a
        choice takes the sequence across a dynamic-NTK step (see `_crosses_ntk_step`)."""
        prepared = [self._prepare(r) for r in requests]
        choice_ids = {id(p): [self.tokenizer.encode(c) for c in (p.request.choices or [])] for p in prepared}

        def extra_len(batch: list[Prepared]) -> int:
            return max((len(c) for p in batch for c in choice_ids[id(p)]), default=0)

        def whole(batch: list[Prepared]) -> list[list[ChoiceScore]]:
            return [self._score_whole(p, choice_ids[id(p)]) for p in batch]

        crossing = [self._crosses_ntk_step(p, choice_ids[id(p)]) for p in prepared]
        results: list[list[ChoiceScore]] = [[] for _ in prepared]
        for kind, run in ((False, lambda b: self._score_batch(b, choice_ids)), (True, whole)):
            rows = [i for i, c in enumerate(crossing) if c == kind]
            if rows:
                part = [prepared[i] for i in rows]
                fan_out = max(len(choice_ids[id(p)]) for p in part)
                report = None if on_batch is None else (  # positions in `rows` -> request indices
                    lambda done, outs, rows=rows: on_batch([rows[j] for j in done], outs))
                for i, out in zip(rows, self._run_batched(part, extra_len, run, fan_out, report)):
                    results[i] = out
        return results

    # -- planning --------------------------------------------------------------------------
    def _prepare(self, request: Request) -> Prepared:
        return Prepared(self.tokenizer.encode_parts(request.parts, request.plain_text), request.images, request)

    def _run_batched(
        self,
        prepared: list[Prepared],
        extra_len: Callable[[list[Prepared]], int],
        run_batch: Callable[[list[Prepared]], list[T]],
        fan_out: int = 0,
        on_batch: OnBatch | None = None,
    ) -> list[T]:
        """Sort by prompt length (then image, so questions on one image travel together), cut
        into batches, run each; on out-of-memory halve the batch size and retry the same rows.
        `fan_out`: the most choices a request has (0 when generating), for the auto size.

        The batch size is decided once per call (auto: from free memory, which shrinks as the
        caching allocator keeps blocks, so it is not re-measured per batch); a halved size
        holds for later calls of the same task, and a new task starts from the full size."""
        order = sorted(
            range(len(prepared)), key=lambda i: (len(prepared[i].ids), [im.key for im in prepared[i].images])
        )
        task = tuple(sorted({p.request.task for p in prepared}))
        size = self.config.batch_size or self._auto_batch_size(prepared, extra_len(prepared), fan_out)
        size = min(size, self._backoff.get(task, size))
        results: list[Any] = [None] * len(prepared)
        start = 0
        while start < len(order):
            chunk = order[start : start + size]
            batch = [prepared[i] for i in chunk]
            self._prefetch_images(batch, [prepared[i] for i in order[start + size : start + 2 * size]])
            work = self.stats.work()
            try:
                outputs = run_batch(batch)
            except Exception as exc:
                if not is_out_of_memory(exc) or len(chunk) == 1:
                    raise
                outputs = None  # handled below: once this handler and its traceback are gone
            if outputs is None:  # out of memory; the failed batch's tensors are unreachable now
                size = self._backoff[task] = max(len(chunk) // 2, 1)
                self.stats.__dict__.update(work)
                self.stats.oom_backoffs += 1
                self._release_memory()
                continue
            self.stats.batches += 1
            self.stats.requests += len(chunk)
            self.stats.batch_sizes.append(len(chunk))
            for i, out in zip(chunk, outputs):
                results[i] = out
            if on_batch is not None:
                on_batch(chunk, outputs)
            start += len(chunk)
        return results

    def _release_memory(self) -> None:
        """Hand the failed batch's blocks back to the device. Called once its tensors are
        unreachable (outside the except block that held its traceback), or it frees nothing."""
        gc.collect()  # tensors caught in reference cycles through frames
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _free_memory(self) -> int:
        """Bytes a batch can use: on CUDA what the driver has free plus what the caching
        allocator has reserved but not handed out (mem_get_info alone counts the latter as used,
        so a second sizing would shrink); on CPU the available physical memory."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

    def _auto_batch_size(self, prepared: list[Prepared], extra: int, fan_out: int = 0) -> int:
        """Requests that fit in ~70% of free memory (see `batch_memory`). Capped, at least 1."""
        cap = self.config.max_batch_size
        if self.device.type != "cuda":
            cap = min(cap, self.config.cpu_max_batch_size)
        longest = max(len(p.ids) for p in prepared)
        new_images = {im.key for p in prepared for im in p.images if im.key not in self.features}
        fixed, per_request = batch_memory(
            self.model.config, self.model.dtype, longest, extra, fan_out,
            images=max(len(p.images) for p in prepared), new_images=len(new_images),
            prefill_tokens=min(max(self._prefill_tokens(), longest), longest * cap),
            cache_room=max(self.config.feature_cache_bytes - self.features.bytes, 0),
        )
        return int(max(1, min(cap, (0.7 * self._free_memory() - fixed) // per_request)))

    # -- images ----------------------------------------------------------------------------
    def _prefetch_images(self, batch: list[Prepared], upcoming: list[Prepared]) -> None:
        """Start decoding the next batch's images (those neither cached nor in this batch) while
        this batch runs."""
        current = {ref.key for p in batch for ref in p.images}
        self.images.prefetch(ref for p in upcoming for ref in p.images
                             if ref.key not in current and ref.key not in self.features)

    def _image_features(self, batch: list[Prepared]) -> torch.Tensor | None:
        """Features [n_img, Q, D] of the batch's images in row-major `<img>` order; each distinct
        key not in the cache is encoded once."""
        refs = [im for p in batch for im in p.images]
        if not refs:
            return None
        local: dict[str, torch.Tensor] = {}
        missing: dict[str, tuple[ImageRef, Request]] = {}
        for p in batch:
            for ref in p.images:
                if ref.key in local or ref.key in missing:
                    continue
                cached = self.features.get(ref.key)
                if cached is not None:
                    local[ref.key] = cached
                    self.stats.image_cache_hits += 1
                else:
                    missing[ref.key] = (ref, p.request)
        if missing:
            started = self._now()
            items = list(missing.items())
            self.images.prefetch(ref for ref, _ in missing.values())  # decoded in parallel
            for s in range(0, len(items), self.config.vision_batch_size):
                part = items[s : s + self.config.vision_batch_size]
                pixels = self._stack([self._pixels(ref, request) for _, (ref, request) in part])
                out = self._visual(pixels.to(self.device, non_blocking=True).to(self.model.dtype))
                for (key, _), feats in zip(part, out):
                    local[key] = feats.clone()
                    self.features.put(key, local[key])
            self.stats.images_encoded += len(items)
            self._sync()  # the last sub-batch is vision time, not the prefill's
            self.stats.vision_s += self._now() - started
        return torch.stack([local[ref.key] for ref in refs])

    def _stack(self, pixels: list[torch.Tensor]) -> torch.Tensor:
        """One tensor of a vision sub-batch; in pinned memory on CUDA, so the copy is asynchronous."""
        if self.device.type != "cuda":
            return torch.stack(pixels)
        out = torch.empty((len(pixels), *pixels[0].shape), dtype=pixels[0].dtype, pin_memory=True)
        return torch.stack(pixels, out=out)

    def _pixels(self, ref: ImageRef, request: Request) -> torch.Tensor:
        try:
            return self.images.get(ref)
        except ImageError as exc:
            raise ImageError(f"sample {request.sample_id}: {exc}") from exc

    # -- prefill ---------------------------------------------------------------------------
    def _prefill(self, batch: list[Prepared], extra: int) -> tuple[torch.Tensor, torch.Tensor, StaticKVCache]:
        """Left-padded prefill into a fresh static cache with room for `extra` more tokens, in
        chunks of rows of at most `prefill_tokens` tokens (each row computes the same alone).

        Returns the last-position hidden states [B, D], the attention mask [B, L + extra]
        (ones after the prompt) and the cache.
        """
        features = self._image_features(batch)
        started = self._now()
        width = max(len(p.ids) for p in batch)
        ids, mask = self._left_padded(batch, width, extra)
        cache = StaticKVCache.for_model(self.model, len(batch), width + extra)
        first_image = [0]
        for p in batch:
            first_image.append(first_image[-1] + len(p.images))
        step = max(1, self._prefill_tokens() // width)
        last, alphas = [], []
        for a in range(0, len(batch), step):
            b = min(a + step, len(batch))
            part = cache.rows(a, b)
            images = features[first_image[a] : first_image[b]] if first_image[b] > first_image[a] else None
            hidden = self.model.transformer(
                input_ids=ids[a:b], attention_mask=mask[a:b, :width], image_features=images, cache=part
            )
            last.append(hidden[:, -1].clone())  # a view would keep the chunk's whole output alive
            alphas.append(part.qwen_ntk_alpha)
        cache.length, cache.qwen_ntk_alpha = width, torch.cat(alphas)
        self._sync()
        self.stats.prefill_s += self._now() - started
        self.stats.prompt_tokens += sum(len(p.ids) for p in batch)
        self.stats.padded_prompt_tokens += width * len(batch)
        return torch.cat(last), mask, cache

    def _left_padded(self, batch: list[Prepared], width: int, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt ids [B, width] padded on the left, and the mask [B, width + extra] on the device."""
        ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.ones(len(batch), width + extra, dtype=torch.long)
        for row, p in enumerate(batch):
            ids[row, width - len(p.ids) :] = torch.tensor(p.ids)
            mask[row, : width - len(p.ids)] = 0
        return ids.to(self.device), mask.to(self.device)

    def _prefill_tokens(self) -> int:
        if self.config.prefill_tokens:
            return self.config.prefill_tokens
        return 32768 if self.device.type == "cuda" else 1024

    # -- generation ------------------------------------------------------------------------
    def _generate_batch(self, batch: list[Prepared]) -> list[str]:
        requests = [p.request for p in batch]
        device, pad = self.device, self.tokenizer.pad_token_id
        max_new = torch.tensor([r.max_new_tokens for r in requests], device=device)
        min_new = torch.tensor([r.min_new_tokens for r in requests], device=device)
        steps = int(max_new.max())
        hold_eos = max(r.min_new_tokens for r in requests)  # host-side: no device sync per step
        if steps <= 0:
            return [""] * len(batch)
        stops = [split_stops(self.tokenizer, r.stop) for r in requests]
        stop_sets = [text for _, text in stops]
        width_ids = max(len(ids) for ids, _ in stops)  # [B, K] stop ids, each row padded with its eos
        stop_ids = torch.tensor([ids + ids[:1] * (width_ids - len(ids)) for ids, _ in stops], device=device)
        tables = self._stop_table_rows(stop_sets)  # [B, V] bool or None

        hidden, mask, cache = self._prefill(batch, steps)
        started = self._now()
        width = mask.size(1) - steps
        mask = mask.bool()  # once per batch: the model takes a decode step's bool mask as it is
        sync_every = 4 if device.type == "cuda" else 1  # how often the host reads the active count
        static = (StaticDecoder(self.model, cache, mask, width, cache.qwen_ntk_alpha, graph=True)
                  if self.config.static_decode and steps > 1 else None)
        head = self.model.lm_head  # tiles read its weight directly: only a plain bias-free Linear qualifies
        tile = self.config.vocab_tile if type(head) is torch.nn.Linear and head.bias is None else None
        tokens = torch.full((len(batch), steps), pad, dtype=torch.long, device=device)
        rows = torch.arange(len(batch), device=device)  # cache row -> batch row
        active = max_new > 0
        produced = torch.zeros(len(batch), dtype=torch.long, device=device)
        token = torch.full((len(batch),), pad, dtype=torch.long, device=device)
        for step in range(steps):
            if step > 0 and static is not None:
                logits = static.step(token, step)
            elif step > 0:
                hidden = self.model.transformer(
                    input_ids=token[:, None], attention_mask=mask[:, : width + step], cache=cache
                )[:, -1]
            if step > 0:
                self.stats.decode_row_steps += len(rows)
                self.stats.decode_steps += 1
            held_back = (stop_ids, min_new > step) if step < hold_eos else (None, None)  # min_new_tokens
            if tile and (static is None or step == 0):
                pick = first_max_tiled(hidden, self.model.lm_head.weight, tile, *held_back)
            else:
                if static is None or step == 0:
                    logits = self.model.lm_head(hidden)
                if step < hold_eos:  # min_new_tokens holds back every stop id, as generate() does its eos ids
                    held = logits.gather(1, stop_ids)
                    logits.scatter_(1, stop_ids, torch.where((min_new > step)[:, None], float("-inf"), held))
                pick = logits.max(-1).indices  # first maximum, as argmax; faster on CPU
            token = torch.where(active, pick, pad)
            tokens[rows, step] = token
            produced.index_add_(0, rows, active.long())
            done = active & ((token[:, None] == stop_ids).any(-1) | (max_new <= step + 1))
            if tables is not None:
                done |= self._hit_stop(tables, rows, token, active & ~done, tokens, step, stop_sets)
            active = active & ~done
            if (step + 1) % sync_every and step + 1 < steps:
                continue  # no host sync this step: finished rows keep writing pad until the next check
            n_active = int(active.sum())
            if n_active == 0:
                break
            if static is None and n_active <= len(rows) // 2:  # finished rows are half the batch: stop paying
                keep = active.nonzero()[:, 0]
                cache.select_rows(keep)
                rows, active, token, mask = rows[keep], active[keep], token[keep], mask[keep]
                max_new, min_new, stop_ids = max_new[keep], min_new[keep], stop_ids[keep]
                if tables is not None:
                    tables = tables[keep]
        self._sync()
        self.stats.decode_s += self._now() - started
        self.stats.generated_tokens += int(produced.sum())
        texts = self.tokenizer.batch_decode(tokens.tolist(), skip_special_tokens=True)
        return [cut_at_stop(t, s) for t, s in zip(texts, stop_sets)]

    def _hit_stop(
        self,
        tables: torch.Tensor,
        rows: torch.Tensor,
        token: torch.Tensor,
        candidates: torch.Tensor,
        tokens: torch.Tensor,
        step: int,
        stop_sets: list[tuple[str, ...]],
    ) -> torch.Tensor:
        """Rows whose decoded new text now contains one of their stop strings. Only rows whose
        new token can complete a stop string are decoded (see `_stop_table`)."""
        vocab = tables.size(1)
        could = candidates & tables.gather(1, token.clamp(max=vocab - 1)[:, None])[:, 0]
        hit = torch.zeros_like(candidates)
        for i in could.nonzero()[:, 0].tolist():
            row = int(rows[i])
            text = self.tokenizer.decode(tokens[row, : step + 1].tolist(), skip_special_tokens=True)
            hit[i] = any(s in text for s in stop_sets[row])
        return hit

    def _stop_table_rows(self, stop_sets: list[tuple[str, ...]]) -> torch.Tensor | None:
        if not any(stop_sets):
            return None
        vocab = self.model.config.vocab_size
        none = torch.zeros(vocab, dtype=torch.bool, device=self.device)
        return torch.stack([self._stop_table(s) if s else none for s in stop_sets])

    def _stop_table(self, stops: tuple[str, ...]) -> torch.Tensor:
        """[V] bool: can this token complete one of `stops`? A stop string newly present in the
        decoded text ends in the new token's bytes, so the token must hold the stop's last byte
        (UTF-8). `</img>` re-shapes earlier text on decode and ids past the tokenizer are
        unknown: both are always checked."""
        if stops not in self._stop_tables:
            last = {s.encode("utf-8")[-1] for s in stops}
            vocab = self.model.config.vocab_size
            token_bytes = self._vocab_bytes()
            table = [True] * vocab
            for i in range(min(vocab, len(token_bytes))):
                table[i] = any(b in last for b in token_bytes[i])
            if self.tokenizer.img_end_id < vocab:
                table[self.tokenizer.img_end_id] = True
            if any("\ufffd" in s for s in stops):
                table = [True] * vocab
            self._stop_tables[stops] = torch.tensor(table, dtype=torch.bool, device=self.device)
        return self._stop_tables[stops]

    def _vocab_bytes(self) -> list[bytes]:
        """Each token id's bytes as decoded with skip_special_tokens (special tokens: b"")."""
        if self._token_bytes is None:
            decoder = self.tokenizer.decoder
            n = len(self.tokenizer)
            self._token_bytes = [
                v if isinstance(v := decoder.get(i, b""), bytes) and i < self.tokenizer.eod_id else b""
                for i in range(n)
            ]
        return self._token_bytes

    # -- choice scoring --------------------------------------------------------------------
    def _score_batch(self, batch: list[Prepared], choice_ids: dict[int, list[list[int]]]) -> list[list[ChoiceScore]]:
        choices = [choice_ids[id(p)] for p in batch]
        extra = max((len(c) for cs in choices for c in cs), default=0)
        hidden, mask, cache = self._prefill(batch, max(extra - 1, 0))
        started = self._now()
        first = torch.log_softmax(self.model.lm_head(hidden).float(), dim=-1)  # [B, V]
        owner = [row for row, cs in enumerate(choices) for _ in cs]
        flat = [c for cs in choices for c in cs]
        scores = [0.0] * len(flat)
        if flat and extra > 0:
            device, pad = self.device, self.tokenizer.pad_token_id
            owner_t = torch.tensor(owner, device=device)
            ids = torch.full((len(flat), extra), pad, dtype=torch.long, device=device)
            valid = torch.zeros(len(flat), extra, dtype=torch.bool, device=device)
            for r, c in enumerate(flat):
                ids[r, : len(c)] = torch.tensor(c)
                valid[r, : len(c)] = True
            logprobs = first.index_select(0, owner_t).gather(1, ids[:, :1])  # [R, 1]
            if extra > 1:
                cache.select_rows(owner_t)
                width = mask.size(1) - (extra - 1)
                fan_mask = torch.cat([mask[owner_t, :width], valid[:, : extra - 1].long()], dim=1)
                hidden = self.model.transformer(
                    input_ids=ids[:, : extra - 1], attention_mask=fan_mask, cache=cache
                )
                rest = torch.log_softmax(self.model.lm_head(hidden).float(), dim=-1)
                logprobs = torch.cat([logprobs, rest.gather(2, ids[:, 1:, None])[..., 0]], dim=1)
            logprobs = torch.where(valid, logprobs, 0.0).sum(-1)
            scores = logprobs.tolist()
        self._sync()
        self.stats.prefill_s += self._now() - started
        out: list[list[ChoiceScore]] = [[] for _ in batch]
        for row, c, score in zip(owner, flat, scores):
            out[row].append(ChoiceScore(logprob=float(score), n_tokens=len(c)))
        return out

    def _crosses_ntk_step(self, p: Prepared, choices: list[list[int]]) -> bool:
        """Does a choice change the dynamic-NTK alpha? eval_mm (and the hf path) scores prompt +
        choice in one forward, whose alpha comes from the whole length; a prompt just under
        `seq_length` (2048, 4096, ...) with a longer choice gets another alpha than the prompt
        alone, so its prefilled cache cannot be shared."""
        c = self.model.config
        if not c.use_dynamic_ntk:
            return False
        alpha = ntk_alpha(len(p.ids), c.seq_length)
        return any(ntk_alpha(len(p.ids) + len(ch) - 1, c.seq_length) != alpha for ch in choices if ch)

    def _score_whole(self, p: Prepared, choices: list[list[int]]) -> list[ChoiceScore]:
        """Each choice in one forward with its prompt (no shared cache), as eval_mm scores it."""
        rows = [Prepared(p.ids + ch[:-1], p.images, p.request) for ch in choices]
        keep = max(len(ch) for ch in choices)
        features = self._image_features(rows)
        started = self._now()
        width = max(len(r.ids) for r in rows)
        ids, mask = self._left_padded(rows, width, 0)
        hidden = self.model.transformer(input_ids=ids, attention_mask=mask, image_features=features)
        logprobs = torch.log_softmax(self.model.lm_head(hidden[:, -keep:]).float(), dim=-1)
        scores = [float(logprobs[r, keep - len(ch) :].gather(1, torch.tensor(ch, device=self.device)[:, None]).sum())
                  for r, ch in enumerate(choices)]
        self._sync()
        self.stats.prefill_s += self._now() - started
        self.stats.prompt_tokens += sum(len(r.ids) for r in rows)
        self.stats.padded_prompt_tokens += width * len(rows)
        return [ChoiceScore(logprob=score, n_tokens=len(ch)) for score, ch in zip(scores, choices)]

    # -- timing ----------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @staticmethod
    def _now() -> float:
        return time.perf_counter()
