"""Batched greedy generation and choice scoring for Qwen-VL: the fast path behind `qwen-vl:`.

The engine drives the model's own modules (`model.transformer`, `model.lm_head`,
`model.transformer.visual`): same weights, same math, so its outputs equal transformers
`generate()` on the same model. What it changes is the work around them:

- each distinct image (by `ImageRef.key`) goes through the vision tower once per run; its
  features sit in a byte-bounded LRU cache (feature_cache.py);
- requests are batched by the scheduler (scheduler.py: sorted by prompt length, auto batch
  size, out-of-memory back-off) and prefilled into a static, pre-allocated KV cache
  (kv_cache.py), a few thousand tokens at a time: the decode batch can be large (the
  vocabulary projection pays for it) while prefill activations stay cache-sized on a CPU and
  small on a GPU;
- vocabulary logits are computed for the last prompt position only;
- decode runs all rows of a batch in one forward per token; per-request stop (eos, stop
  strings, max_new_tokens, min_new_tokens) is tensor work, and the rows that finished are
  dropped from the cache once they are half of it (that is when dropping pays);
- stop strings are checked in Python only for rows whose new token can complete one
  (stops.py), so the per-token Python work does not grow with the batch.

Positions come from each row's attention mask (language.py), so results do not depend on
the batch a request lands in or on the order of requests.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch

from evalkit.models.qwen_vl.engine_types import EngineConfig, EngineStats
from evalkit.models.qwen_vl.feature_cache import FeatureCache
from evalkit.models.qwen_vl.kv_cache import StaticKVCache
from evalkit.models.qwen_vl.language import ntk_alpha
from evalkit.models.qwen_vl.modeling import QwenVLForCausalLM
from evalkit.models.qwen_vl.prefetch import PixelPrefetcher, default_workers
from evalkit.models.qwen_vl.processor import QwenVLProcessor
from evalkit.models.qwen_vl.scheduler import OnBatch, Scheduler, TokenizedRequest
from evalkit.models.qwen_vl.static_decode import StaticDecoder
from evalkit.models.qwen_vl.stops import StopTables, cut_at_stop, split_stops
from evalkit.models.qwen_vl.vocab import first_max_tiled
from evalkit.task import ChoiceScore, ImageError, ImageRef, Request

T = TypeVar("T")


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
        self.scheduler = Scheduler(self.config, model.config, model.dtype, self.device, self.features)
        self.stop_tables = StopTables(self.tokenizer, model.config.vocab_size, self.device)
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
                                 on_batch=on_batch)

    @torch.inference_mode()
    @_engine_call
    def loglikelihood(self, requests: Sequence[Request], on_batch: OnBatch | None = None) -> list[list[ChoiceScore]]:
        """Summed log-probability of each choice's tokens after the prompt (prompt and choice
        tokenized separately, then concatenated, as eval_mm scores multiple choice). The prompt
        is prefilled once per request and its cache fanned out to the choices, except where a
        choice takes the sequence across a dynamic-NTK step (see `_crosses_ntk_step`)."""
        prepared = [self._prepare(r) for r in requests]
        choice_ids = {id(p): [self.tokenizer.encode(c) for c in (p.request.choices or [])] for p in prepared}

        def extra_len(batch: list[TokenizedRequest]) -> int:
            return max((len(c) for p in batch for c in choice_ids[id(p)]), default=0)

        def whole(batch: list[TokenizedRequest]) -> list[list[ChoiceScore]]:
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
    def _prepare(self, request: Request) -> TokenizedRequest:
        return TokenizedRequest(self.tokenizer.encode_parts(request.parts, request.plain_text), request.images, request)

    def _run_batched(
        self,
        prepared: list[TokenizedRequest],
        extra_len: Callable[[list[TokenizedRequest]], int],
        run_batch: Callable[[list[TokenizedRequest]], list[T]],
        fan_out: int = 0,
        on_batch: OnBatch | None = None,
    ) -> list[T]:
        """The scheduler's batches of `prepared`, counted in this engine's stats, the next
        batch's images decoded while one runs."""
        return self.scheduler.run(prepared, extra_len, run_batch, self.stats, fan_out, on_batch, self._prefetch_images)

    # -- images ----------------------------------------------------------------------------
    def _prefetch_images(self, batch: list[TokenizedRequest], upcoming: list[TokenizedRequest]) -> None:
        """Start decoding the next batch's images (those neither cached nor in this batch) while
        this batch runs."""
        current = {ref.key for p in batch for ref in p.images}
        self.images.prefetch(ref for p in upcoming for ref in p.images
                             if ref.key not in current and ref.key not in self.features)

    def _image_features(self, batch: list[TokenizedRequest]) -> torch.Tensor | None:
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
    def _prefill(self, batch: list[TokenizedRequest], extra: int) -> tuple[torch.Tensor, torch.Tensor, StaticKVCache]:
        """Left-padded prefill into a fresh static cache with room for `extra` more tokens, in
        chunks of rows of at most `prefill_tokens` tokens (each row computes the same alone).

        Returns the last-position hidden states [B, D], the attention mask [B, L + extra]
        (ones after the prompt) and the cache.
        """
        features = self._image_features(batch)
        started = self._now()
        width = max(len(p.ids) for p in batch)
        ids, mask = self._left_padded(batch, width, extra)
        cache = StaticKVCache.empty(self.model.config, len(batch), width + extra, self.model.dtype, self.model.device)
        first_image = [0]
        for p in batch:
            first_image.append(first_image[-1] + len(p.images))
        step = max(1, self.config.prefill_chunk(self.device) // width)
        last, alphas = [], []
        for a in range(0, len(batch), step):
            b = min(a + step, len(batch))
            part = cache.rows(a, b)
            images = features[first_image[a] : first_image[b]] if first_image[b] > first_image[a] else None
            hidden = self.model.transformer(
                input_ids=ids[a:b], attention_mask=mask[a:b, :width], image_features=images, cache=part
            )
            last.append(hidden[:, -1].clone())  # a view would keep the chunk's whole output alive
            alphas.append(part.ntk_alpha)
        cache.length, cache.ntk_alpha = width, torch.cat(alphas)
        self._sync()
        self.stats.prefill_s += self._now() - started
        self.stats.prompt_tokens += sum(len(p.ids) for p in batch)
        self.stats.padded_prompt_tokens += width * len(batch)
        return torch.cat(last), mask, cache

    def _left_padded(self, batch: list[TokenizedRequest], width: int, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt ids [B, width] padded on the left, and the mask [B, width + extra] on the device."""
        ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.ones(len(batch), width + extra, dtype=torch.long)
        for row, p in enumerate(batch):
            ids[row, width - len(p.ids) :] = torch.tensor(p.ids)
            mask[row, : width - len(p.ids)] = 0
        return ids.to(self.device), mask.to(self.device)

    # -- generation ------------------------------------------------------------------------
    def _generate_batch(self, batch: list[TokenizedRequest]) -> list[str]:
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
        tables = self.stop_tables.rows(stop_sets)  # [B, V] bool or None

        hidden, mask, cache = self._prefill(batch, steps)
        started = self._now()
        width = mask.size(1) - steps
        mask = mask.bool()  # once per batch: the model takes a decode step's bool mask as it is
        sync_every = 4 if device.type == "cuda" else 1  # how often the host reads the active count
        static = (StaticDecoder(self.model, cache, mask, width, cache.ntk_alpha, graph=True)
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
                done |= self.stop_tables.hits(tables, rows, token, active & ~done, tokens, step, stop_sets)
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

    # -- choice scoring --------------------------------------------------------------------
    def _score_batch(self, batch: list[TokenizedRequest], choice_ids: dict[int, list[list[int]]]) -> list[list[ChoiceScore]]:
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

    def _crosses_ntk_step(self, p: TokenizedRequest, choices: list[list[int]]) -> bool:
        """Does a choice change the dynamic-NTK alpha? eval_mm (and the hf path) scores prompt +
        choice in one forward, whose alpha comes from the whole length; a prompt just under
        `seq_length` (2048, 4096, ...) with a longer choice gets another alpha than the prompt
        alone, so its prefilled cache cannot be shared."""
        c = self.model.config
        if not c.use_dynamic_ntk:
            return False
        alpha = ntk_alpha(len(p.ids), c.seq_length)
        return any(ntk_alpha(len(p.ids) + len(ch) - 1, c.seq_length) != alpha for ch in choices if ch)

    def _score_whole(self, p: TokenizedRequest, choices: list[list[int]]) -> list[ChoiceScore]:
        """Each choice in one forward with its prompt (no shared cache), as eval_mm scores it."""
        rows = [TokenizedRequest(p.ids + ch[:-1], p.images, p.request) for ch in choices]
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
