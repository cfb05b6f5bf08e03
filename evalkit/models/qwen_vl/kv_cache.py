"""Where keys, values and each row's dynamic-NTK alpha live between forwards.

The alpha of a row is fixed at prefill from the row's own prompt length and reused while
decoding (as the reference does), so it belongs to the cache beside the keys it rotated.
Both caches declare it; `QwenVLTransformer` reads and writes it, nothing else does.

- `StaticKVCache`: the engine's pre-allocated buffers, as gpt-fast's KVCache (no per-step
  concatenation; rows dropped or fanned out with `select_rows`).
- `QwenVLDynamicCache`: transformers' growing DynamicCache, for `generate()` and training;
  its row operations keep the alphas in step with the keys.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from evalkit.models.qwen_vl.config import QwenVLConfig


class StaticKVCache:
    """Keys and values [layers, batch, heads, max_len, head_dim], written in place.

    `update(k, v, layer_idx)` (what the attention layers call) writes at the current length and
    returns views of the filled prefix, so attention costs what the sequence needs, not
    `max_len`; the last layer's update advances the length.
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor, length: int = 0):
        self.k, self.v = k, v
        self.length = length
        self.ntk_alpha: torch.Tensor | None = None  # [batch] float64, set at prefill

    @classmethod
    def empty(cls, config: QwenVLConfig, batch: int, max_len: int, dtype: torch.dtype, device) -> StaticKVCache:
        shape = (config.num_hidden_layers, batch, config.num_attention_heads, max_len, config.head_dim)
        return cls(torch.empty(shape, dtype=dtype, device=device), torch.empty(shape, dtype=dtype, device=device))

    @staticmethod
    def bytes_per_row(config: QwenVLConfig, dtype: torch.dtype, max_len: int) -> int:
        elt = torch.empty((), dtype=dtype).element_size()
        return 2 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * max_len * elt

    @property
    def layers(self) -> int:
        return self.k.size(0)

    def rows(self, start: int, end: int) -> StaticKVCache:
        """A cache over rows start:end that writes into this one's storage (chunked prefill)."""
        return StaticKVCache(self.k[:, start:end], self.v[:, start:end], self.length)

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
        if self.ntk_alpha is not None:
            self.ntk_alpha = self.ntk_alpha.index_select(0, index.cpu())


class QwenVLDynamicCache(DynamicCache):
    """transformers' DynamicCache with the rows' NTK alphas (set at prefill)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ntk_alpha: torch.Tensor | None = None

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._select_alphas(indices)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._select_alphas(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        if self.ntk_alpha is not None:
            self.ntk_alpha = self.ntk_alpha.repeat_interleave(repeats, dim=0)

    def _select_alphas(self, index: torch.Tensor) -> None:
        if self.ntk_alpha is not None:
            self.ntk_alpha = self.ntk_alpha[index.cpu()]


QwenVLCache = StaticKVCache | QwenVLDynamicCache
