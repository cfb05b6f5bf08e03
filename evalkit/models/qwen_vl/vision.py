"""Qwen-VL's vision tower: an OpenCLIP-shaped ViT and the one-layer cross-attention resampler.

Module and parameter names equal the keys under `transformer.visual.` of the released
checkpoints. Two layout details matter for parity: the ViT's fused `in_proj` is head-major
(per head: q, k, v of head_dim each), while the resampler uses nn.MultiheadAttention's
[q | k | v] layout. Both learned position tables are stored in the checkpoint (the resampler's
2D sin-cos table too, bf16-rounded), so neither is recomputed at load time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6


def get_abs_pos(abs_pos: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Resize a square [L, C] position table to `num_tokens` positions (bicubic, in fp32).

    The tables are trained for a 16x16 grid; a 448px image has a 32x32 patch grid.
    """
    src = int(math.sqrt(abs_pos.size(0)))
    tgt = int(math.sqrt(num_tokens))
    if src == tgt:
        return abs_pos
    grid = abs_pos.float().reshape(1, src, src, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(tgt, tgt), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).flatten(0, 2).to(abs_pos.dtype)


def sincos_pos_embed_2d(dim: int, grid_size: int) -> np.ndarray:
    """MAE's 2D sin-cos table [grid*grid, dim]: first half encodes the column, second the row.

    Only used to initialise a fresh model; checkpoints carry the table.
    """

    def one_axis(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    coords = np.arange(grid_size, dtype=np.float32)
    w, h = np.meshgrid(coords, coords)  # w first, as the reference
    return np.concatenate([one_axis(dim // 2, w), one_axis(dim // 2, h)], axis=1)


class VisualAttention(nn.Module):
    """Self-attention with the fused, head-major `in_proj` of Qwen-VL's ViT."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.in_proj(x).view(b, n, self.heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.split(self.head_dim, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class VisualMLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.c_fc(x)
        if torch.is_grad_enabled():
            return self.c_proj(F.gelu(hidden))  # exact erf GELU, as nn.GELU()
        # inference: in place (the same exact GELU). A second [16, 1024, 1260] buffer (82 MB) is
        # over glibc's mmap threshold, so each one was mapped and page-faulted in afresh.
        return self.c_proj(torch.ops.aten.gelu_(hidden))


class VisualBlock(nn.Module):
    """Pre-LN transformer block of the ViT."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attn = VisualAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = VisualMLP(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class VisualTransformer(nn.Module):
    """Holds `resblocks` so the keys read `transformer.visual.transformer.resblocks.N...`."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.resblocks = nn.ModuleList(VisualBlock(width, heads, mlp_ratio) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class Resampler(nn.Module):
    """Cross-attention adapter: `n_queries` learned queries attend to the patch features.

    2D sin-cos positions are added to the queries and (resized to the patch grid) to the keys;
    one nn.MultiheadAttention with `embed_dim // 128` heads, as the reference.
    """

    def __init__(self, n_queries: int, embed_dim: int, kv_dim: int):
        super().__init__()
        grid = int(math.sqrt(n_queries))
        self.pos_embed = nn.Parameter(
            torch.from_numpy(sincos_pos_embed_2d(embed_dim, grid)).float(), requires_grad=False
        )
        self.query = nn.Parameter(torch.zeros(n_queries, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, max(embed_dim // 128, 1), batch_first=True)
        self.ln_q = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # transformers leaves requires_grad=False parameters in their stored dtype: cast here.
        pos_embed = self.pos_embed.to(x.dtype)
        key_pos = get_abs_pos(pos_embed, x.size(1))
        x = self.ln_kv(self.kv_proj(x))
        q = (self.ln_q(self.query) + pos_embed).unsqueeze(0).expand(x.size(0), -1, -1)
        out, _ = self.attn(q, x + key_pos, x, need_weights=False)
        return out


class VisionTransformer(nn.Module):
    """pixels [n, 3, S, S] -> image features [n, n_queries, output_dim].

    Usable standalone: build it from a config's `visual` dict and load the
    `transformer.visual.*` tensors (with that prefix stripped).
    """

    def __init__(
        self,
        image_size: int = 448,
        patch_size: int = 14,
        width: int = 1664,
        layers: int = 48,
        heads: int = 16,
        mlp_ratio: float = 4.9231,
        n_queries: int = 256,
        output_dim: int = 4096,
        **_: Any,
    ):
        super().__init__()
        self.image_size = image_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.positional_embedding = nn.Parameter(width**-0.5 * torch.randn(256, width))
        self.ln_pre = nn.LayerNorm(width, eps=LN_EPS)
        self.transformer = VisualTransformer(width, layers, heads, mlp_ratio)
        self.attn_pool = Resampler(n_queries, output_dim, width)
        self.ln_post = nn.LayerNorm(output_dim, eps=LN_EPS)
        self.proj = nn.Parameter(output_dim**-0.5 * torch.randn(output_dim, output_dim))

    @property
    def dtype(self) -> torch.dtype:
        return self.conv1.weight.dtype

    def embed_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """conv1 patches + resized position table, [n, grid*grid, width] (before ln_pre)."""
        x = self.conv1(pixels.to(self.conv1.weight.device, self.dtype))
        x = x.flatten(2).transpose(1, 2)
        return x + get_abs_pos(self.positional_embedding, x.size(1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.transformer(self.ln_pre(self.embed_patches(pixels)))
        return self.ln_post(self.attn_pool(x)) @ self.proj

    @classmethod
    def from_safetensors(
        cls, path: str, config: dict[str, Any], prefix: str = "transformer.visual."
    ) -> VisionTransformer:
        """A standalone tower from a file of `transformer.visual.*` tensors (fp32)."""
        from safetensors.torch import load_file

        state = {k[len(prefix) :]: v.float() for k, v in load_file(path).items() if k.startswith(prefix)}
        with torch.device("meta"):
            model = cls(**config)
        model.load_state_dict(state, strict=True, assign=True)
        return model.float().eval()
