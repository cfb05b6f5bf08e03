"""A small byte-level BPE vocabulary in the official `qwen.tiktoken` format.

The demo model keeps Qwen's tokenizer code unchanged, so its vocabulary must be a tiktoken
rank file like the released one: one `base64(token) rank` line per token. Ranks 0..255 are the
single bytes (rank = byte value, so every string stays encodable and the `<img>` path bytes keep
their ids), then merges learned on the demo texts with Qwen's own pre-tokenisation pattern
(which keeps digits single, as in Qwen: box coordinates are written digit by digit). The
special tokens (`<|endoftext|>`, `<img>`, `<box>`...) are numbered by the tokenizer from
len(ranks) upward, as in the official file, so a small vocabulary gives them small ids.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import regex

from evalkit.chat import SYSTEM_PROMPT
from evalkit.models.qwen_vl.tokenizer import PAT_STR, SPECIAL_TOKENS

# Text that the demo prompts do not contain but users will type (chat templates, few-shot
# separators); a little of it keeps such prompts from exploding into single bytes.
EXTRA_TEXT = (
    f"{SYSTEM_PROMPT}\nuser\nassistant\nsystem\nPicture 1: Picture 2: \n"
    "Question: Answer: Context: Options: A. B. C. D. the a an of in on is are what which how many"
)


def train_bpe(texts: Iterable[str], n_merges: int) -> list[bytes]:
    """Byte-level BPE: the merged tokens in the order they were learned (ties broken by bytes,
    so the result is the same on every machine)."""
    special = regex.compile("|".join(regex.escape(t) for t in SPECIAL_TOKENS))
    pattern = regex.compile(PAT_STR)
    pieces: Counter[tuple[bytes, ...]] = Counter()
    for text in texts:
        for chunk in special.split(text):
            for piece in pattern.findall(chunk):
                pieces[tuple(bytes([b]) for b in piece.encode("utf-8"))] += 1
    merges: list[bytes] = []
    words = dict(pieces)
    for _ in range(n_merges):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, count in words.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        best, count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if count < 2:
            break
        merged = best[0] + best[1]
        merges.append(merged)
        words = {_merge(word, best, merged): c for word, c in words.items()}
    return merges


def _merge(word: tuple[bytes, ...], pair: tuple[bytes, bytes], merged: bytes) -> tuple[bytes, ...]:
    out: list[bytes] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def write_tiktoken(path: str | Path, merges: list[bytes]) -> int:
    """Write the rank file (bytes 0..255, then the merges); returns the number of ranks."""
    tokens = [bytes([b]) for b in range(256)] + [m for m in merges if len(m) > 1]
    seen: set[bytes] = set()
    lines = []
    for token in tokens:
        if token in seen:
            continue
        seen.add(token)
        lines.append(f"{base64.b64encode(token).decode()} {len(lines)}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="ascii")
    return len(lines)


def build_vocab(path: str | Path, texts: Iterable[str], n_merges: int = 320) -> int:
    return write_tiktoken(path, train_bpe([*texts, EXTRA_TEXT], n_merges))
