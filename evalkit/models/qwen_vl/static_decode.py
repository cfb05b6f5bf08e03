"""The decode step with fixed shapes, replayed as one CUDA graph (as gpt-fast does).

A decode step on a GPU is launch-bound: ~50 small kernels per layer, each waiting on the host.
Here everything that changes from step to step lives in tensors allocated once per batch (the
token, its cache position, its rotary rows, the attention mask over the whole static cache),
the step attends over the full cache with the not-yet-written keys masked out, and K/V are
written at a position held in a tensor. So the step has the same shapes and addresses every
time: on CUDA it is captured once per batch and replayed (one launch per step); on other
devices it runs eagerly (the same arithmetic, which is how its outputs are tested against
transformers `generate()` on CPU).

Masks, positions, rotary tables and the logn scale are built once per batch, not per step.
Rows are not dropped while decoding in this mode (a new batch shape would need a new graph).
"""

from __future__ import annotations

import torch

from evalkit.models.qwen_vl.language import logn_scale, rotary_cos_sin


class PositionKVCache:
    """The static cache's `update` at a position held in a tensor: writes the step's k/v there
    and returns the whole [B, H, max_len, D] buffers (the mask hides what is not written yet)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, position: torch.Tensor):
        self.k, self.v, self.position = k, v, position

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.k[layer_idx].index_copy_(2, self.position, k)
        self.v[layer_idx].index_copy_(2, self.position, v)
        return self.k[layer_idx], self.v[layer_idx]


class StaticDecoder:
    """Decode steps 1.. of one batch after prefill. `mask` [B, width + steps] is the batch's
    attention mask (ones after the prompt), `alphas` the rows' dynamic-NTK alphas."""

    def __init__(self, model, cache, mask: torch.Tensor, width: int, alphas: torch.Tensor, graph: bool):
        config = model.config
        self.model, self.width = model, width
        device = mask.device
        cache.k[:, :, :, width:].zero_()  # never-written keys: masked, but must not be NaN (0 * NaN)
        cache.v[:, :, :, width:].zero_()
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, width - 1 :]  # of the token fed at step s: [s]
        cos, sin = rotary_cos_sin(positions, alphas, config.rotary_dim, config.rotary_emb_base)
        self.cos_all, self.sin_all = cos.to(device), sin.to(device)
        self.scale_all = None
        if config.use_logn_attn and mask.size(1) > config.seq_length:
            self.scale_all = logn_scale(positions, config.seq_length).to(device)
        batch = mask.size(0)
        self.token = torch.zeros(batch, dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.cos, self.sin = self.cos_all[:, :, :1].clone(), self.sin_all[:, :, :1].clone()
        self.scale = None if self.scale_all is None else self.scale_all[:, :, :1].clone()
        allowed = mask.bool().clone()
        allowed[:, width:] = False
        self.allowed = allowed[:, None, None, :]
        self.kv = PositionKVCache(cache.k, cache.v, self.position)
        self.use_graph = graph and device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None

    def step(self, token: torch.Tensor, step: int) -> torch.Tensor:
        """Logits [B, V] after feeding `token` [B] at decode step `step` (>= 1)."""
        index = self.width + step - 1
        self.token.copy_(token)
        self.position.fill_(index)
        self.allowed[..., index] = True
        self.cos.copy_(self.cos_all[:, :, step : step + 1])
        self.sin.copy_(self.sin_all[:, :, step : step + 1])
        if self.scale is not None:
            self.scale.copy_(self.scale_all[:, :, step : step + 1])
        if not self.use_graph:
            return self._forward()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.out

    def _forward(self) -> torch.Tensor:
        lm = self.model.transformer
        hidden = lm.wte(self.token[:, None])
        for block in lm.h:
            hidden = block(hidden, self.cos, self.sin, self.scale, self.allowed, self.kv)
        return self.model.lm_head(lm.ln_f(hidden)[:, -1])

    def _capture(self) -> None:
        """Warm up on a side stream, then capture one step. Warm-up and capture write the same
        k/v at the same position, so running them changes nothing; replay runs the step."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._forward()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._forward()
