"""Qwen-7B decoder blocks as used by Qwen-VL: RMSNorm, rotary with dynamic NTK, logn attention
scaling, fused qkv with bias, SwiGLU MLP.

One deliberate difference from the reference: positions. The reference uses the absolute row
index as the rotary position, so a left-padded row is shifted by its padding and its outputs
depend on the batch it was put in. Here every row's positions come from its attention mask
(`position = cumsum(mask) - 1`), and the dynamic-NTK alpha from the row's own unpadded length, so
each member of a padded batch computes exactly what it computes alone (= the reference at batch 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.models.qwen_vl.config import QwenVLConfig


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) computed in fp32, cast back, then scaled (as the reference)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def ntk_alpha(length: int, seq_length: int) -> float:
    """Dynamic-NTK alpha for a prompt of `length` tokens: 1 up to `seq_length`, then 2**k - 1."""
    return max(2 ** math.ceil(math.log(length / seq_length, 2) + 1) - 1, 1)


def rotary_cos_sin(
    positions: torch.Tensor, alphas: torch.Tensor, dim: int, base: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [B, 1, L, dim] (fp32) for per-row `positions` [B, L] and NTK `alphas` [B].

    NTK scales the base: base * alpha ** (dim / (dim - 2)).
    """
    bases = base * alphas.double() ** (dim / (dim - 2))
    exponents = torch.arange(0, dim, 2, device=positions.device).float() / dim
    inv_freq = 1.0 / bases.float()[:, None].to(positions.device) ** exponents  # [B, dim/2]
    freqs = positions.float()[:, :, None] * inv_freq[:, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half rotary on the first cos.size(-1) channels of x [B, H, L, D], in fp32."""
    rot = cos.size(-1)
    if rot == x.size(-1):  # the whole head rotates (rotary_pct 1, every Qwen-VL): no pass-through concat
        xf = x.float()
        x1, x2 = xf.chunk(2, dim=-1)
        return (xf * cos + torch.cat((-x2, x1), dim=-1) * sin).type_as(x)
    x_rot, x_pass = x[..., :rot].float(), x[..., rot:].float()
    x1, x2 = x_rot.chunk(2, dim=-1)
    x_rot = x_rot * cos + torch.cat((-x2, x1), dim=-1) * sin
    return torch.cat((x_rot, x_pass), dim=-1).type_as(x)


def logn_scale(positions: torch.Tensor, seq_length: int) -> torch.Tensor:
    """Query scale [B, 1, L, 1]: log_{seq_length}(p + 1) past the training length, else 1."""
    n = (positions + 1).double()
    scale = torch.where(n > seq_length, n.log() / math.log(seq_length), torch.ones_like(n))
    return scale[:, None, :, None]


class QwenAttention(nn.Module):
    def __init__(self, config: QwenVLConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.heads = config.num_attention_heads
        self.head_dim = config.head_dim
        projection = config.kv_channels * config.num_attention_heads
        self.c_attn = nn.Linear(config.hidden_size, 3 * projection, bias=True)
        self.c_proj = nn.Linear(projection, config.hidden_size, bias=not config.no_bias)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        query_scale: torch.Tensor | None,
        mask: torch.Tensor,
        cache=None,
    ) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.c_attn(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)
        if query_scale is not None:
            q = q * query_scale.to(q.dtype)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(out.transpose(1, 2).reshape(b, n, -1))


class QwenMLP(nn.Module):
    """SwiGLU with the reference's branch order: c_proj(w1(x) * silu(w2(x)))."""

    def __init__(self, config: QwenVLConfig):
        super().__init__()
        hidden = config.intermediate_size // 2
        self.w1 = nn.Linear(config.hidden_size, hidden, bias=not config.no_bias)
        self.w2 = nn.Linear(config.hidden_size, hidden, bias=not config.no_bias)
        self.c_proj = nn.Linear(hidden, config.hidden_size, bias=not config.no_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.c_proj(self.w1(x) * F.silu(self.w2(x)))
        # inference: in place, two [tokens, hidden] buffers fewer to allocate and stream through
        return self.c_proj(self.w1(x).mul_(F.silu(self.w2(x), inplace=True)))


class QwenBlock(nn.Module):
    def __init__(self, config: QwenVLConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = QwenAttention(config, layer_idx)
        self.ln_2 = RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = QwenMLP(config)

    def forward(self, x, cos, sin, query_scale, mask, cache=None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cos, sin, query_scale, mask, cache)
        return x + self.mlp(self.ln_2(x))
