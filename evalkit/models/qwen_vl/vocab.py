"""The greedy pick over the vocabulary without writing the full logits.

On a CPU the decode step's vocabulary projection ([B, D] x [D, 151,936]) is most of the step;
written whole, its logits ([B, V] fp32: 39 MB at batch 64) go to memory and are read back for
the max. Here the vocabulary is cut into tiles of `tile` rows of the head's weight: each tile's
logits stay in cache, are reduced to a per-row max and its index at once, and the tiles' maxima
are combined taking the first tile that holds the largest value, so the pick is the exact first
maximum (as `argmax`), tile by tile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def first_max_tiled(hidden: torch.Tensor, weight: torch.Tensor, tile: int,
                    ban_ids: torch.Tensor | None = None, ban_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Index [B] of the first maximum of `hidden @ weight.T` over the vocabulary; the ids
    `ban_ids` [B, K] are -inf in rows `ban_rows` (bool [B]), as min_new_tokens holds stops back."""
    vocab = weight.size(0)
    n = -(-vocab // tile)
    values = torch.empty(n, hidden.size(0), dtype=hidden.dtype, device=hidden.device)
    indices = torch.empty(n, hidden.size(0), dtype=torch.long, device=hidden.device)
    buffer = torch.empty(hidden.size(0), tile, dtype=hidden.dtype, device=hidden.device)
    for j, start in enumerate(range(0, vocab, tile)):
        part = weight[start : start + tile]
        logits = buffer[:, : part.size(0)]
        torch.mm(hidden, part.t(), out=logits)
        if ban_ids is not None and ban_rows is not None:  # no host sync: ids outside the tile change nothing
            ids = torch.arange(start, start + part.size(0), device=hidden.device)
            held = (ids[None, None, :] == ban_ids[:, :, None]).any(1) & ban_rows[:, None]  # [B, tile]
            logits.masked_fill_(held, float("-inf"))
        torch.max(logits, -1, out=(values[j], indices[j]))
    best = values.max(0).indices  # the first tile holding the row's largest value
    return indices.gather(0, best[None])[0] + best * tile


def first_max(hidden: torch.Tensor, head: torch.nn.Linear, ban_ids: torch.Tensor | None = None,
              ban_rows: torch.Tensor | None = None) -> torch.Tensor:
    """The same pick through the whole logits (the reference the tiled one is tested against)."""
    logits = F.linear(hidden, head.weight, head.bias)
    if ban_ids is not None and ban_rows is not None:
        logits.scatter_(1, ban_ids, torch.where(ban_rows[:, None], float("-inf"), logits.gather(1, ban_ids)))
    return logits.max(-1).indices
