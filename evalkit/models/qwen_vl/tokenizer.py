"""Qwen tokenizer: tiktoken BPE over `qwen.tiktoken` plus Qwen-VL's special tokens.

Behaviour follows the original `tokenization_qwen.py`: NFC normalisation, every special token
allowed in the text, and `<img>path</img>` spans expanded to exactly 256 ids (the UTF-8 bytes of
the path as ids 0..255, then `<imgpad>`), so the language model always sees 256 slots that the
vision features replace. Decoding reverses the expansion. Only a small transformers-like surface
is offered (`__call__` with left/right padding, `encode`, `decode`, `batch_decode`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tiktoken
import torch
from tiktoken.load import load_tiktoken_bpe

from evalkit.chat import SYSTEM_PROMPT
from evalkit.models.base import ModelError

VOCAB_FILE = "qwen.tiktoken"
PAT_STR = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"
IMSTART = "<|im_start|>"
IMEND = "<|im_end|>"
EXTRAS = tuple(f"<|extra_{i}|>" for i in range(205))
IMAGE_ST = ("<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<img>", "</img>", "<imgpad>")
SPECIAL_TOKENS = (ENDOFTEXT, IMSTART, IMEND, *EXTRAS, *IMAGE_ST)
IMG_TOKEN_SPAN = 256  # ids between <img> and </img>: one per resampler query


def replace_closed_spans(
    items: list[Any], start: Any, end: Any, replace: Callable[[list[Any]], list[Any]], strict: bool = True
) -> list[Any]:
    """Replace every `start ... end` span (tags included) by `replace(span)`.

    An unclosed `start` is an error when `strict` (encoding, as the reference does) and is left
    as it is otherwise (decoding model output, which may stop mid-span).
    """
    out: list[Any] = []
    pos = 0
    while True:
        try:
            a = items.index(start, pos)
            b = items.index(end, a)
        except ValueError:
            if strict and start in items[pos:]:
                raise ValueError(f"unclosed {start!r} in input") from None
            break
        out.extend(items[pos:a])
        out.extend(replace(items[a : b + 1]))
        pos = b + 1
    out.extend(items[pos:])
    return out


class QwenTokenizer:
    """tiktoken-backed Qwen tokenizer with Qwen-VL's image-span handling."""

    padding_side = "left"
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str | Path, padding_side: str = "left"):
        vocab_file = Path(vocab_file)
        if not vocab_file.is_file():
            raise ModelError(f"{vocab_file}: tokenizer file {VOCAB_FILE} is missing")
        try:
            ranks = load_tiktoken_bpe(str(vocab_file))
        except Exception as exc:  # tiktoken raises plain ValueError/binascii errors on bad lines
            raise ModelError(f"{vocab_file}: cannot read tokenizer file ({exc})") from exc
        self.vocab_file = vocab_file
        self.special_tokens = {tok: len(ranks) + i for i, tok in enumerate(SPECIAL_TOKENS)}
        self.encoding = tiktoken.Encoding(
            "Qwen", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=self.special_tokens
        )
        self.decoder: dict[int, bytes | str] = {v: k for k, v in ranks.items()}
        self.decoder.update({v: k for k, v in self.special_tokens.items()})
        self.padding_side = padding_side
        self.eod_id = self.special_tokens[ENDOFTEXT]
        self.im_start_id = self.special_tokens[IMSTART]
        self.im_end_id = self.special_tokens[IMEND]
        self.img_start_id = self.special_tokens["<img>"]
        self.img_end_id = self.special_tokens["</img>"]
        self.img_pad_id = self.special_tokens["<imgpad>"]

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> QwenTokenizer:
        return cls(Path(path) / VOCAB_FILE, **kwargs)

    # -- ids ---------------------------------------------------------------------------------
    @property
    def eos_token_id(self) -> int:
        return self.eod_id

    @property
    def pad_token_id(self) -> int:
        return self.eod_id

    def __len__(self) -> int:
        return self.encoding.n_vocab

    def encode(self, text: str, allowed_special: str | set[str] = "all") -> list[int]:
        """Token ids of `text`, with each `<img>path</img>` expanded to 256 slots."""
        text = unicodedata.normalize("NFC", text)
        ids = self.encoding.encode(text, allowed_special=allowed_special, disallowed_special=())
        return replace_closed_spans(ids, self.img_start_id, self.img_end_id, self._expand_image_span)

    def encode_parts(
        self,
        parts: Sequence[Any],
        plain_text: bool = False,
        image_text: Callable[[Any], str] | None = None,
    ) -> list[int]:
        """Ids of a request's parts. Runs of text (images in between written as `image_text(image)`,
        default "": the features fill the span) are encoded as one string, every special token allowed,
        or with `plain_text` only the image tags (make_context's rule for turn content: "<|im_end|>"
        typed in a question stays text). A `Token` part (a chat template marker, role or newline) is
        encoded on its own with every special token allowed, as make_context encodes them."""
        from evalkit.chat import Token

        ids: list[int] = []
        run: list[str] = []
        allowed: str | set[str] = set(IMAGE_ST) if plain_text else "all"
        for part in [*parts, None]:
            if isinstance(part, Token) or part is None:
                if run:
                    ids += self.encode("".join(run), allowed_special=allowed)
                    run = []
                if part is not None:
                    ids += self.encode(part)
            elif isinstance(part, str):
                run.append(part)
            else:
                run.append(image_text(part) if image_text else "")
        return ids

    def _expand_image_span(self, span: list[int]) -> list[int]:
        path = self.encoding.decode_bytes(span[1:-1])
        if len(path) > IMG_TOKEN_SPAN:
            raise ValueError(
                f"image path inside <img>..</img> is longer than {IMG_TOKEN_SPAN} bytes: {path[:60]!r}"
            )
        return [self.img_start_id, *path, *[self.img_pad_id] * (IMG_TOKEN_SPAN - len(path)), self.img_end_id]

    def _collapse_image_span(self, span: list[int]) -> list[int]:
        inner = span[1:-1]
        if self.img_pad_id in inner:
            inner = inner[: inner.index(self.img_pad_id)]
        path = bytes(i for i in inner if i < 256).decode("utf-8", errors="replace")
        return [self.img_start_id, *self.encoding.encode(path, disallowed_special=()), self.img_end_id]

    def decode(self, ids: Sequence[int] | torch.Tensor | int, skip_special_tokens: bool = False) -> str:
        """Text of `ids`; image spans come back as `<img>path</img>`.

        `skip_special_tokens` drops every id >= 151643 (so the path stays, its tags go), as the
        reference does. Ids beyond the tokenizer (the model's 76 unused vocab rows) decode to "".
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        ids = replace_closed_spans(
            list(ids), self.img_start_id, self.img_end_id, self._collapse_image_span, False
        )
        limit = self.eod_id if skip_special_tokens else len(self)
        return self.encoding.decode([i for i in ids if i < limit], errors="replace")

    def batch_decode(self, sequences: Sequence[Sequence[int]] | torch.Tensor, **kwargs: Any) -> list[str]:
        return [self.decode(seq, **kwargs) for seq in sequences]

    def tokenize(self, text: str) -> list[bytes | str]:
        """Token surface forms as the reference returns them: bytes, or str for special tokens."""
        return self.convert_ids_to_tokens(self.encode(text))

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[bytes | str]:
        return [self.decoder[i] for i in ids]

    def __call__(
        self,
        text: str | list[str],
        padding: bool | str = False,
        padding_side: str | None = None,
        return_tensors: str | None = None,
    ) -> dict[str, Any]:
        """`input_ids` and `attention_mask`; pads with <|endoftext|> on `padding_side` (default left)."""
        batch = [text] if isinstance(text, str) else list(text)
        encoded = [self.encode(t) for t in batch]
        if padding or return_tensors == "pt":
            if return_tensors == "pt" and not padding and len({len(e) for e in encoded}) > 1:
                raise ValueError("texts of different lengths: pass padding=True to batch them")
            out = self.pad(encoded, padding_side=padding_side, return_tensors=return_tensors)
        else:
            out = {"input_ids": encoded, "attention_mask": [[1] * len(e) for e in encoded]}
        if isinstance(text, str) and return_tensors is None:
            out = {k: v[0] for k, v in out.items()}
        return out

    def pad(
        self, encoded: list[list[int]], padding_side: str | None = None, return_tensors: str | None = None
    ) -> dict[str, Any]:
        side = padding_side or self.padding_side
        longest = max(len(e) for e in encoded)
        ids, mask = [], []
        for e in encoded:
            fill = longest - len(e)
            if side == "left":
                ids.append([self.pad_token_id] * fill + e)
                mask.append([0] * fill + [1] * len(e))
            else:
                ids.append(e + [self.pad_token_id] * fill)
                mask.append([1] * len(e) + [0] * fill)
        if return_tensors == "pt":
            return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask)}
        return {"input_ids": ids, "attention_mask": mask}

    # -- Qwen-VL prompt helpers ---------------------------------------------------------------
    @staticmethod
    def from_list_format(items: list[dict[str, Any]]) -> str:
        """Qwen-VL's interleaved format -> text ("Picture N:<img>path</img>\\n" per image)."""
        text, n_images = "", 0
        for item in items:
            if "image" in item:
                n_images += 1
                text += f"Picture {n_images}:<img>{item['image']}</img>\n"
            elif "text" in item:
                text += item["text"]
            elif "box" in item:
                if "ref" in item:
                    text += f"<ref>{item['ref']}</ref>"
                for box in item["box"]:
                    text += "<box>({},{}),({},{})</box>".format(*(int(v) for v in box))
            else:
                raise ValueError(f"unsupported element: {item}")
        return text

    def make_context(
        self,
        query: str,
        history: list[tuple[str, str | None]] | None = None,
        system: str = SYSTEM_PROMPT,
        max_window_size: int = 6144,
    ) -> tuple[str, list[int]]:
        """chatml context as the reference `make_context` builds it: each role's text is tokenized
        on its own and joined with <|im_start|>/<|im_end|> and newline ids; oldest history turns
        are dropped to fit `max_window_size`. Returns (raw_text, ids)."""
        nl = self.encode("\n")

        def turn(role: str, content: str) -> tuple[str, list[int]]:  # content: only image tags are special
            text = f"{IMSTART}{role}\n{content}{IMEND}"
            ids = self.encode(content, allowed_special=set(IMAGE_ST))
            return text, [self.im_start_id, *self.encode(role), *nl, *ids, self.im_end_id]

        system_text, system_ids = turn("system", system)
        raw, ids = "", []
        for past_query, past_response in reversed(history or []):
            q_text, q_ids = turn("user", past_query)
            if past_response is not None:
                r_text, r_ids = turn("assistant", past_response)
                next_ids, next_raw = [*nl, *q_ids, *nl, *r_ids], f"\n{q_text}\n{r_text}"
            else:
                next_ids, next_raw = [*nl, *q_ids, *nl], f"\n{q_text}\n"
            if len(system_ids) + len(next_ids) + len(ids) >= max_window_size:
                break
            ids, raw = next_ids + ids, next_raw + raw
        q_text, q_ids = turn("user", query)
        ids = [*system_ids, *ids, *nl, *q_ids, *nl, self.im_start_id, *self.encode("assistant"), *nl]
        raw = f"{system_text}{raw}\n{q_text}\n{IMSTART}assistant\n"
        return raw, ids
