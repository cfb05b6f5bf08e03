"""lmms-eval model plugin: `--model evalkit_qwen_vl` answers lmms-eval's own tasks with evalkit's
batched Qwen-VL engine.

    python -m lmms_eval eval --model evalkit_qwen_vl --model_args pretrained=/ckpt/Qwen-VL \\
        --tasks <task> --batch_size auto

lmms-eval 0.7 resolves the name through the `lmms_eval.models` entry point, which loads the
manifest in lmms_eval_manifest.py; that names `EvalkitQwenVL` below. This module imports
lmms_eval, so nothing else in evalkit imports it (lmms-eval is the optional extra
`evalkit[lmms]`).

model_args: `pretrained` (checkpoint dir, required), `dtype` (fp32/bf16/fp16), `prompt_style`
(base: `<img></img>{context}` as the paper prompts the base model; chat: a Qwen-VL-Chat ChatML
turn), `engine` (fast/hf) and `chunk_size`. Batch size and device come from lmms-eval's own
`--batch_size` (N, auto, auto:N) and `--device` (lmms-eval passes them to every model, so they
cannot also be model_args); `--max_batch_size` caps "auto".

How lmms-eval's requests (`Instance.args`) become evalkit `Request`s:
- generate_until (context, gen_kwargs, doc_to_visual, doc_id, task, split): one Request each,
  the images of doc_to_visual(doc) placed before the context (as lmms-eval's own qwen_vl model
  places them), `until` as stop strings, `max_new_tokens` kept; decoding is greedy.
- loglikelihood (context, continuation or doc_to_target, doc_to_visual, doc_id, task, split),
  or (context, continuation) for an unconditional score: instances that share a prompt become
  one Request whose choices are their continuations, so the engine prefills a question once
  for all its options. The answer is (loss, is_greedy), loss being the mean negative
  log-probability of the continuation's tokens: what every lmms-eval model returns (the HF
  `loss` over the continuation) and what lmms-eval's multiple_choice scoring expects (it picks
  the argmin), despite the base class's docstring. `is_greedy` comes from one greedy
  generation per prompt.
- generate_until_multi_round: the task's doc_to_text(doc, previous_output, round_idx,
  previous_round_info) gives each next round until it signals the end; a round is one call.

Requests reach the engine in chunks of `chunk_size`, so only one chunk's images are decoded at
a time; within a chunk the engine sorts and batches. A request that cannot be built or run (a
video where an image is expected, an undecodable image) gets an empty answer, or an infinite
loss, and a warning naming the document; the run goes on.

lmms-eval 0.7.3 stringifies every model's loglikelihood answers before scoring them, which
breaks all multiple_choice tasks; `keep_loglikelihood_scores` works around that for runs of
this model (and does nothing on an lmms-eval without the bug).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import lmms_eval.evaluator
import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from loguru import logger
from PIL import Image
from tqdm import tqdm

from evalkit.chat import STOP_MARKERS, conversation, image_lines
from evalkit.distributed import Dist
from evalkit.models.qwen_vl.adapter import QwenVLAdapter
from evalkit.task import GenerationSettings, ImageError, ImageRef, Request

T = TypeVar("T")

MODEL_NAME = "evalkit_qwen_vl"
PROMPT_STYLES = ("base", "chat")
DEFAULT_MAX_NEW_TOKENS = 1024  # lmms-eval's own qwen_vl default for tasks that set none
EMPTY_CONTEXT = "<|endoftext|>"  # what an unconditional score conditions on (lm-eval's convention)
FAILED_SCORE = (float("inf"), False)  # an infinite loss: never the pick of a multiple choice


def parse_batch_size(value: int | str) -> int | str:
    """lmms-eval's --batch_size -> evalkit's: N stays N; "auto" and "auto:N" (lmms-eval's
    "re-detect N times") are the engine's "auto", which re-halves on out-of-memory anyway."""
    text = str(value).strip().lower()
    if text == "auto" or text.startswith("auto:"):
        return "auto"
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(
        f"{MODEL_NAME}: batch size must be a positive integer, 'auto' or 'auto:N', got {value!r}"
    )


def image_ref(visual: Any) -> ImageRef:
    """One entry of doc_to_visual(doc): a PIL image or an image file's path."""
    if isinstance(visual, Image.Image):
        return ImageRef.from_pil(visual)
    if isinstance(visual, str | os.PathLike) and Path(visual).suffix.lower() in Image.registered_extensions():
        return ImageRef.from_path(visual)
    raise ImageError(f"{MODEL_NAME} takes images only, got {type(visual).__name__} {str(visual)[:80]!r}")


def flatten_visuals(visuals: Any) -> list[Any]:
    """doc_to_visual's result as a flat list: None for text-only tasks, nested lists one level deep."""
    if visuals is None:
        return []
    items = visuals if isinstance(visuals, list | tuple) else [visuals]
    return [v for item in items for v in (item if isinstance(item, list | tuple) else [item])]


def prompt_parts(context: str, images: Sequence[ImageRef], style: str) -> list[str | ImageRef]:
    """Images first, then the context without lmms-eval's `<image>` placeholders. base: one image
    as `<img></img>{context}` (the paper's prompts); several images, and chat always, as Qwen-VL's
    "Picture N:<img></img>\\n" lines; chat is one user turn of evalkit's chat template."""
    text = context.replace("<image>", "")
    if style == "chat":
        return conversation([], [*image_lines(images, itertools.count(1)), text])
    if len(images) > 1:
        parts: list[str | ImageRef] = image_lines(images, itertools.count(1))
    else:
        parts = [p for image in images for p in ("<img>", image, "</img>")]
    if not text and not images:
        text = EMPTY_CONTEXT
    parts.append(text)
    return parts


def is_score(output: Any) -> bool:
    """A loglikelihood answer: (loss, is_greedy), or the list a response cache reads back."""
    return (
        isinstance(output, tuple | list)
        and len(output) == 2
        and isinstance(output[0], int | float)
        and not isinstance(output[0], bool)
        and isinstance(output[1], bool)
    )


def keep_loglikelihood_scores() -> None:
    """lmms-eval 0.7.3's evaluator passes every model output through unwrap_generation_output,
    which turns a (loss, is_greedy) pair into its str, so no multiple_choice task can be
    scored, whatever the model. Where the installed lmms-eval does that, its evaluator gets an
    unwrap that passes such pairs through and leaves every other output to the original."""
    original = lmms_eval.evaluator.unwrap_generation_output
    if getattr(original, "keeps_scores", False) or not isinstance(original((0.0, True))[0], str):
        return

    def unwrap(output: Any) -> tuple[Any, Any]:
        return (tuple(output), None) if is_score(output) else original(output)

    unwrap.keeps_scores = True  # type: ignore[attr-defined]
    lmms_eval.evaluator.unwrap_generation_output = unwrap


def describe(inst: Instance) -> str:
    return f"{inst.task_name} doc {inst.doc_id}"


def generation_settings(gen_kwargs: dict[str, Any] | None) -> tuple[GenerationSettings, bool]:
    """What evalkit's greedy engine takes from lmms-eval's gen_kwargs (the token budget and the
    stops), and whether the task asked for sampling or beams, which the engine ignores."""
    kwargs = gen_kwargs or {}
    until = kwargs.get("until") or []
    stop = [until] if isinstance(until, str) else [s for s in until if s]
    sampling = bool(kwargs.get("do_sample")) or int(kwargs.get("num_beams") or 1) > 1
    return GenerationSettings(max_new_tokens=int(kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)), stop=stop), sampling


@dataclass
class Dialogue:
    """One multi-round instance in flight: the next round's prompt and the answers so far."""

    inst: Instance
    doc: Any
    context: str
    visuals: Any
    settings: GenerationSettings
    sampling: bool  # asked for by the task; decoding stays greedy
    outputs: list[str] = field(default_factory=list)
    rounds: int = 0
    info: Any = None
    done: bool = False


class EvalkitQwenVL(lmms):
    """evalkit's QwenVLAdapter behind lmms-eval's `lmms` interface (a "simple" model: lmms-eval
    hands it text contexts and doc_to_visual, not chat messages)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        prompt_style: str = "base",
        engine: str = "fast",
        chunk_size: int = 256,
    ) -> None:
        super().__init__()
        self._join_processes(device)
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(
                f"{MODEL_NAME}: prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {prompt_style!r}"
            )
        if not (isinstance(chunk_size, int) and chunk_size >= 1):
            raise ValueError(f"{MODEL_NAME}: chunk_size must be a positive integer, got {chunk_size!r}")
        self.model = QwenVLAdapter.from_spec(
            str(pretrained),
            dtype=dtype,
            device=Dist.from_env().rank_device(device),  # this rank's GPU under torchrun/accelerate
            batch_size=parse_batch_size(batch_size),
            prompt_style=prompt_style,
            engine=engine,
        )
        if max_batch_size:
            self.model.engine.config.max_batch_size = int(max_batch_size)
        self.prompt_style = prompt_style
        self.chunk_size = chunk_size
        self._warned_sampling = False
        keep_loglikelihood_scores()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _join_processes(self, device: str | None) -> None:
        """Under `accelerate launch` or torchrun, take this process's rank and the world size, as
        lmms-eval's own models do: lmms-eval gives each rank every world_size-th document by
        `rank`/`world_size` (left at rank 0 of 1, every process would evaluate every document on
        the evaluators before 0.7.3, which read only these). The process group is the one the
        launcher's accelerate state made, or else evalkit's (nccl only where each local rank has
        its own GPU, gloo otherwise)."""
        import torch.distributed as torch_dist

        dist = Dist.from_env()
        if not dist.enabled:
            return
        dist.init(device=device)  # a no-op when lmms-eval's accelerate state has joined already
        self._rank = torch_dist.get_rank()
        self._world_size = torch_dist.get_world_size()
        logger.info(f"{MODEL_NAME}: rank {self._rank} of {self._world_size}")

    # -- lmms-eval's three calls -------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        results: list[str] = []
        for chunk in self._chunks(requests, "generate_until"):
            built = [self._attempt(inst, lambda inst=inst: self._generation_request(inst)) for inst in chunk]
            results.extend(self._run(self.model.generate, built, fallback=""))
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool]] = []
        for chunk in self._chunks(requests, "loglikelihood"):
            results.extend(self._score_chunk(chunk))
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        results: list[list[str]] = []
        for chunk in self._chunks(requests, "generate_until_multi_round"):
            results.extend(self._converse(chunk))
        return results

    # -- building requests -------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        return self.task_dict[task][split][doc_id]

    def _request(
        self,
        inst: Instance,
        context: str,
        visuals: Any,
        settings: GenerationSettings | None = None,
        sampling: bool = False,
        choices: list[str] | None = None,
    ) -> Request:
        images = [image_ref(v) for v in flatten_visuals(visuals)]
        request = Request(
            sample_id=describe(inst),
            task=inst.task_name,
            parts=prompt_parts(context, images, self.prompt_style),
            choices=choices,
            plain_text=self.prompt_style == "chat",
            index=int(inst.doc_id) if str(inst.doc_id).isdigit() else -1,
        )
        if settings is not None:
            self._warn_if_sampling(sampling)
            markers = list(STOP_MARKERS) if self.prompt_style == "chat" else []
            request.max_new_tokens, request.stop = settings.max_new_tokens, [*settings.stop, *markers]
        return request

    def _generation_request(self, inst: Instance) -> Request:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = inst.args
        visuals = doc_to_visual(self._doc(task, split, doc_id))
        return self._request(inst, context, visuals, *generation_settings(gen_kwargs))

    def _warn_if_sampling(self, sampling: bool) -> None:
        if sampling and not self._warned_sampling:
            logger.warning(
                f"{MODEL_NAME}: the task asks for sampling or beam search; evalkit's engine decodes greedily"
            )
            self._warned_sampling = True

    # -- running them ------------------------------------------------------------------------
    def _chunks(self, requests: list[Instance], what: str) -> Iterator[list[Instance]]:
        with tqdm(total=len(requests), desc=f"{MODEL_NAME} {what}", disable=self.rank != 0) as bar:
            for start in range(0, len(requests), self.chunk_size):
                chunk = requests[start : start + self.chunk_size]
                yield chunk
                bar.update(len(chunk))

    @staticmethod
    def _attempt(inst: Instance, build: Callable[[], T]) -> T | None:
        """build(), or None with a warning naming the document when that one document fails."""
        try:
            return build()
        except MemoryError:
            raise
        except Exception as exc:
            logger.warning(f"{MODEL_NAME}: {describe(inst)}: {type(exc).__name__}: {exc}")
            return None

    def _run(
        self, call: Callable[[list[Request]], list[T]], requests: list[Request | None], fallback: Any
    ) -> list[Any]:
        """call() on the requests that were built, in one engine call; `fallback` for the rest."""
        built = [i for i, r in enumerate(requests) if r is not None]
        results = [fallback] * len(requests)
        for i, result in zip(built, self._call(call, [requests[i] for i in built])):
            results[i] = fallback if result is None else result
        return results

    def _call(self, call: Callable[[list[Request]], list[T]], requests: list[Request]) -> list[T | None]:
        """When a batch fails, each request is retried alone, so a bad sample costs only its own answer."""
        if not requests:
            return []
        try:
            return list(call(requests))
        except MemoryError:
            raise
        except Exception as exc:
            if len(requests) > 1:
                return [result for r in requests for result in self._call(call, [r])]
            logger.warning(f"{MODEL_NAME}: {requests[0].sample_id}: {type(exc).__name__}: {exc}")
            return [None]

    # -- loglikelihood -----------------------------------------------------------------------
    def _choice_args(self, inst: Instance) -> tuple[tuple, str, Callable | None, Any]:
        """(prompt key, continuation, doc_to_visual, doc) of one loglikelihood instance; instances
        with one key share one prompt."""
        if len(inst.args) == 2:  # unconditional: (context, continuation), no document
            context, continuation = inst.args
            return (context,), continuation, None, None
        context, target, doc_to_visual, doc_id, task, split = inst.args
        doc = self._doc(task, split, doc_id)
        continuation = target if isinstance(target, str) else target(doc)
        if not isinstance(continuation, str):
            raise TypeError(
                f"the continuation must be text, got {type(continuation).__name__} {continuation!r}"
            )
        return (task, split, doc_id, context), continuation, doc_to_visual, doc

    def _score_chunk(self, chunk: list[Instance]) -> list[tuple[float, bool]]:
        groups: dict[tuple, list[int]] = {}
        parsed = [self._attempt(inst, lambda inst=inst: self._choice_args(inst)) for inst in chunk]
        for pos, args in enumerate(parsed):
            if args is not None:
                groups.setdefault(args[0], []).append(pos)
        requests = [self._group_request(chunk, parsed, positions) for positions in groups.values()]
        scores = self._run(self.model.loglikelihood, requests, fallback=None)
        greedy = self._run(self.model.generate, [self._greedy_request(r) for r in requests], fallback=None)
        results = [FAILED_SCORE] * len(chunk)
        for positions, choice_scores, text in zip(groups.values(), scores, greedy):
            if choice_scores is None:
                continue
            for pos, score in zip(positions, choice_scores):
                results[pos] = (-score.mean_logprob, text is not None and text.startswith(parsed[pos][1]))
        return results

    def _group_request(self, chunk: list[Instance], parsed: list, positions: list[int]) -> Request | None:
        inst = chunk[positions[0]]
        key, _, doc_to_visual, doc = parsed[positions[0]]
        context = key[-1]
        choices = [parsed[pos][1] for pos in positions]
        visuals = doc_to_visual(doc) if doc_to_visual is not None else None
        return self._attempt(inst, lambda: self._request(inst, context, visuals, choices=choices))

    def _greedy_request(self, request: Request | None) -> Request | None:
        """Generates as many tokens as the longest choice has: a choice is greedy when the
        greedy text starts with it."""
        if request is None:
            return None
        longest = max(len(self.model.tokenizer.encode(c)) for c in request.choices or [""])
        return replace(request, choices=None, max_new_tokens=longest, stop=[])

    # -- multi-round -------------------------------------------------------------------------
    def _converse(self, chunk: list[Instance]) -> list[list[str]]:
        dialogues = [self._attempt(inst, lambda inst=inst: self._start(inst)) for inst in chunk]
        while active := [d for d in dialogues if d is not None and not d.done]:
            built = [
                self._attempt(d.inst, lambda d=d: self._request(d.inst, d.context, d.visuals, d.settings, d.sampling))
                for d in active
            ]
            for d, answer in zip(active, self._run(self.model.generate, built, fallback=None)):
                d.outputs.append(answer or "")
                d.rounds += 1
                if answer is None or self._attempt(d.inst, lambda d=d: self._next_round(d)) is None:
                    d.done = True
        return [d.outputs if d is not None else [""] for d in dialogues]

    def _start(self, inst: Instance) -> Dialogue:
        context, gen_kwargs, doc_to_visual, _, doc_id, task, split = inst.args
        doc = self._doc(task, split, doc_id)
        return Dialogue(inst, doc, context, doc_to_visual(doc), *generation_settings(gen_kwargs))

    def _next_round(self, d: Dialogue) -> Dialogue:
        """Asks the task for the next round; it returns (visuals, context, terminal, outputs, info)."""
        doc_to_text = d.inst.args[3]
        visuals, context, terminal, outputs, info = doc_to_text(
            d.doc, previous_output=list(d.outputs), round_idx=d.rounds, previous_round_info=d.info
        )
        if outputs is not None:
            d.outputs = list(outputs)
        d.visuals, d.context, d.info, d.done = visuals, context, info, bool(terminal)
        return d
