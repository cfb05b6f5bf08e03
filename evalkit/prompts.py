"""Prompt templates -> interleaved requests, with few-shot assembly as eval_mm does it.

A template is plain text with `{field}` slots and one `{image}` slot per image, e.g. the
paper's VQA prompt `<img>{image}</img>{question} Answer:`. Rendering splits the template at
`{image}` so images stay separate parts (never serialised into text), which is what lets a
4-shot prompt carry five images in order. Few-shot follows Qwen-VL's eval_mm: each shot is
the task's own prompt filled with the shot's image and question followed by " {answer}",
shots concatenated with no separator before the query prompt.

The chat style (Qwen-VL-Chat) is a conversation built by `evalkit.chat`, the one owner of the
chat template: a spec's `prompts.chat` is the user's turn only, `{image}` there becomes
"Picture N:<img>...</img>\n" (numbered across the conversation; `<img>{image}</img>` written out in
the template stays as written, for queries that are plain strings like MME's), no `prompts.chat`
means the base prompt as it is (Qwen's chat_format "raw"), each shot is a user turn and an
assistant turn, and `prompts.chat_reply` (optional) starts the model's reply.
"""

from __future__ import annotations

import itertools
import random
import string
from collections.abc import Iterator
from typing import Any

from evalkit.chat import STOP_MARKERS, conversation, image_lines
from evalkit.errors import EvalkitError
from evalkit.task import ImageRef, Request, Sample, TaskSpec, stable_hash


class PromptError(EvalkitError, ValueError):
    pass


def choice_letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def format_choices(choices: list[str]) -> str:
    """eval_mm's option list: "A. x\\nB. y"."""
    return "\n".join(f"{letter}. {c}" for letter, c in zip(choice_letters(len(choices)), choices))


def render(template: str, sample: Sample, numbers: Iterator[int] | None = None) -> list[str | ImageRef]:
    """Fill one template with one sample: text parts and image parts in order. With `numbers` (the
    chat style) each `{image}` becomes a numbered "Picture N:<img>...</img>\n" line."""
    pieces = template.split("{image}")
    n_slots = len(pieces) - 1
    if n_slots != len(sample.images):
        raise PromptError(f"sample {sample.id}: template has {n_slots} image slot(s), sample has {len(sample.images)} image(s)")
    values = _template_values(sample)
    parts: list[str | ImageRef] = []
    for i, piece in enumerate(pieces):
        text = _format(piece, values, sample.id)
        if text:
            parts.append(text)
        if i < n_slots:
            explicit = piece.endswith("<img>") and pieces[i + 1].startswith("</img>")  # written out: kept
            parts += image_lines([sample.images[i]], numbers) if numbers and not explicit else [sample.images[i]]
    return parts


def _template_values(sample: Sample) -> dict[str, Any]:
    values = dict(sample.fields)
    if isinstance(values.get("choices"), list):
        values["choices"] = format_choices(values["choices"])
    return values


def _format(piece: str, values: dict[str, Any], sample_id: str) -> str:
    names = {name for _, name, _, _ in string.Formatter().parse(piece) if name}
    missing = names - set(values)
    if missing:
        raise PromptError(f"sample {sample_id}: prompt needs field(s) {sorted(missing)} the sample lacks")
    return piece.format_map(values)


def choose_shots(pool: list[Sample], sample: Sample, k: int, seed: int, task: str) -> list[Sample]:
    """k demonstrations for `sample`, the same on every run and machine for the same seed.

    Seeded per (seed, task, sample id), not from one global stream, so a resumed or sharded
    run picks exactly the shots an uninterrupted run would. Shots never show the query image.
    """
    if k <= 0:
        return []
    query_keys = {im.key for im in sample.images}
    candidates = [s for s in pool if s.id != sample.id and not query_keys & {im.key for im in s.images}
                  and s.error is None]
    if len(candidates) < k:
        raise PromptError(f"{task}: only {len(candidates)} few-shot candidates for sample {sample.id}, need {k}")
    rng = random.Random(int(stable_hash([seed, task, sample.id]), 16))
    return rng.sample(candidates, k)


def shot_answer(shot: Sample, field: str) -> str:
    value = shot.fields.get(field, shot.metadata.get(field, shot.references))
    if isinstance(value, list):
        value = _most_common(value)
    return str(value)


def _most_common(values: list[Any]) -> Any:
    """The majority answer (VQA's 10 human answers), ties to the earliest."""
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return max(counts, key=lambda v: counts[v]) if counts else ""


def build_request(spec: TaskSpec, sample: Sample, style: str, shots: list[Sample] | None = None) -> Request:
    answer_field = spec.fewshot.answer_field if spec.fewshot else "answer"
    chat = style == "chat" and "chat" in spec.prompts
    if chat:
        numbers = itertools.count(1)
        history = [(render(spec.prompts["chat"], shot, numbers), [shot_answer(shot, answer_field)]) for shot in shots or []]
        query = render(spec.prompts["chat"], sample, numbers)
        reply = [_format(spec.prompts["chat_reply"], _template_values(sample), sample.id)] if spec.prompts.get("chat_reply") else []
        parts = conversation(history, query, reply)
    else:
        template = spec.prompts.get(style) or spec.prompts.get("base") or next(iter(spec.prompts.values()))
        parts = []
        for shot in shots or []:
            parts += render(template, shot)
            parts.append(" " + shot_answer(shot, answer_field))
        parts += render(template, sample)
    choices = None
    if spec.output_type == "choice":
        choices = [" " + letter for letter in choice_letters(len(sample.fields["choices"]))]
    return Request(
        sample_id=sample.id,
        task=spec.name,
        parts=_merge_text(parts),
        max_new_tokens=spec.generation.max_new_tokens,
        min_new_tokens=spec.generation.min_new_tokens,
        stop=[*spec.generation.stop, *(STOP_MARKERS if chat else ())],
        plain_text=chat,
        choices=choices,
        index=int(sample.metadata.get("index", -1)),
        row=int(sample.metadata.get("row", sample.metadata.get("index", -1))),
    )


def _merge_text(parts: list[str | ImageRef]) -> list[str | ImageRef]:
    """Adjacent text parts joined, so a model sees each run of text once."""
    out: list[str | ImageRef] = []
    for p in parts:  # a chat template Token stays its own part
        if type(p) is str and out and type(out[-1]) is str:
            out[-1] += p
        else:
            out.append(p)
    return out
