"""Qwen-VL-Chat's ChatML conversation: the one place the chat template lives.

Task specs give only the user's turn (`prompts.chat: "{image}{question} Answer:"`); this module
adds everything else as the reference builds it (`qwen_generation_utils.make_context` for the
layout, `from_list_format` for images):

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>
    \\n<|im_start|>user\\nPicture 1:<img>...</img>\\n{shot question}<|im_end|>
    \\n<|im_start|>assistant\\n{shot answer}<|im_end|>          (one user/assistant pair per shot)
    \\n<|im_start|>user\\nPicture 2:<img>...</img>\\n{question}<|im_end|>
    \\n<|im_start|>assistant\\n{reply prefix, e.g. grounding's <ref>..</ref><box>}

Images are numbered across the whole conversation. The template's own markers are `Token` parts;
everything else is content, which the reference encodes with only the image tags special, so a
question holding "<|im_end|>" as characters stays text (`Request.plain_text`). Generation stops
at `<|im_end|>` / `<|im_start|>` (chat()'s stop words), given as `STOP_MARKERS` in `Request.stop`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from evalkit.task import ImageRef

SYSTEM_PROMPT = "You are a helpful assistant."
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
STOP_MARKERS = (IM_END, IM_START)  # chat()'s stop_words_ids for chat_format "chatml"


class Token(str):
    """A template token (a marker, a role name, a newline): encoded on its own, markers as control tokens."""


Part = str | ImageRef
NL = Token("\n")


def image_lines(images: Sequence[ImageRef], numbers: Iterator[int]) -> list[Part]:
    """`Picture N:<img>` image `</img>\\n` per image, as `from_list_format` writes them."""
    parts: list[Part] = []
    for image in images:
        parts += [f"Picture {next(numbers)}:<img>", image, "</img>\n"]
    return parts


def _turn(role: str, content: Sequence[Part]) -> list[Part]:
    return [Token(IM_START), Token(role), NL, *content, Token(IM_END)]


def conversation(
    history: Sequence[tuple[Sequence[Part], Sequence[Part] | None]],
    query: Sequence[Part],
    reply_prefix: Sequence[Part] = (),
    system: str = SYSTEM_PROMPT,
) -> list[Part]:
    """The prompt parts of a chat: `history` is (user content, assistant content or None) per past turn."""
    parts = _turn("system", [system])
    for user, assistant in history:
        parts += [NL, *_turn("user", user), NL]
        if assistant is not None:
            parts += _turn("assistant", assistant)
    parts += [NL, *_turn("user", query), NL, Token(IM_START), Token("assistant"), NL, *reply_prefix]
    return parts
