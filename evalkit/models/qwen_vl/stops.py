"""Stop strings: which stops are token ids and which are text, where a text is cut, and the
per-token tables that keep the engine's per-step Python work from growing with the batch.

Shared by the engine and the transformers `generate()` path, so both stop alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


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


class StopTables:
    """Stop strings are checked in Python only for rows whose new token can complete one (its
    bytes contain a stop string's last byte). One [V] table per distinct stop set, built once."""

    def __init__(self, tokenizer: Any, vocab_size: int, device: torch.device):
        self.tokenizer, self.vocab_size, self.device = tokenizer, vocab_size, device
        self._tables: dict[tuple[str, ...], torch.Tensor] = {}
        self._token_bytes: list[bytes] | None = None

    def rows(self, stop_sets: list[tuple[str, ...]]) -> torch.Tensor | None:
        """[B, V] bool, a row per request; None when no request has a text stop."""
        if not any(stop_sets):
            return None
        none = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
        return torch.stack([self.table(s) if s else none for s in stop_sets])

    def table(self, stops: tuple[str, ...]) -> torch.Tensor:
        """[V] bool: can this token complete one of `stops`? A stop string newly present in the
        decoded text ends in the new token's bytes, so the token must hold the stop's last byte
        (UTF-8). `</img>` re-shapes earlier text on decode and ids past the tokenizer are
        unknown: both are always checked."""
        if stops not in self._tables:
            last = {s.encode("utf-8")[-1] for s in stops}
            vocab = self.vocab_size
            token_bytes = self._vocab_bytes()
            table = [True] * vocab
            for i in range(min(vocab, len(token_bytes))):
                table[i] = any(b in last for b in token_bytes[i])
            if self.tokenizer.img_end_id < vocab:
                table[self.tokenizer.img_end_id] = True
            if any("\ufffd" in s for s in stops):
                table = [True] * vocab
            self._tables[stops] = torch.tensor(table, dtype=torch.bool, device=self.device)
        return self._tables[stops]

    def hits(
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
        new token can complete a stop string are decoded (see `table`)."""
        vocab = tables.size(1)
        could = candidates & tables.gather(1, token.clamp(max=vocab - 1)[:, None])[:, 0]
        hit = torch.zeros_like(candidates)
        for i in could.nonzero()[:, 0].tolist():
            row = int(rows[i])
            text = self.tokenizer.decode(tokens[row, : step + 1].tolist(), skip_special_tokens=True)
            hit[i] = any(s in text for s in stop_sets[row])
        return hit

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
