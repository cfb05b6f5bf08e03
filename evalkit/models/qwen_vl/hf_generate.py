"""transformers `generate()` (and a plain forward for choice scores) on the bundled model: the
baseline every engine speed and parity figure is measured against, and the `engine="hf"` path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from evalkit.models.qwen_vl.modeling import QwenVLForCausalLM
from evalkit.models.qwen_vl.stops import cut_at_stop, split_stops
from evalkit.models.qwen_vl.tokenizer import QwenTokenizer
from evalkit.task import ChoiceScore, Request


class StopOnStrings(StoppingCriteria):
    """Per-row stop once the decoded new text contains any stop string."""

    def __init__(self, tokenizer: QwenTokenizer, stops: list[str], prompt_len: int):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, stops, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


@dataclass
class HFGenerate:
    """Requests through transformers in batches of `batch_size` with equal settings."""

    model: QwenVLForCausalLM
    tokenizer: QwenTokenizer
    images: Callable[[Request], list[torch.Tensor]]
    batch_size: int

    @torch.inference_mode()
    def generate(self, requests: list[Request]) -> list[str]:
        """transformers generate() in batches of `batch_size` requests with equal settings."""
        outputs: list[str] = [""] * len(requests)

        def settings(i: int) -> tuple:
            r = requests[i]
            return (r.max_new_tokens, r.min_new_tokens, tuple(s for s in r.stop if s))

        order = sorted(range(len(requests)), key=settings)
        for key, group in groupby(order, key=settings):
            indices = list(group)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for i, text in zip(chunk, self._generate_batch([requests[i] for i in chunk], *key)):
                    outputs[i] = text
        return outputs

    def _generate_batch(self, requests: list[Request], max_new: int, min_new: int, stops: tuple) -> list[str]:
        batch = self.tokenizer.pad(
            [self.tokenizer.encode_parts(r.parts, r.plain_text) for r in requests], return_tensors="pt"
        )
        stop_ids, stops = split_stops(self.tokenizer, stops)
        pixels = [p for r in requests for p in self.images(r)]
        inputs = {k: v.to(self.model.device) for k, v in batch.items()}
        if pixels:
            inputs["pixel_values"] = torch.stack(pixels).to(self.model.device, self.model.dtype)
        prompt_len = inputs["input_ids"].shape[1]
        criteria = (
            StoppingCriteriaList([StopOnStrings(self.tokenizer, list(stops), prompt_len)]) if stops else None
        )
        out = self.model.generate(
            **inputs,
            max_new_tokens=max_new,
            min_new_tokens=min_new or None,
            do_sample=False,
            num_beams=1,
            eos_token_id=stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=criteria,
        )
        texts = self.tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)
        return [cut_at_stop(t, list(stops)) for t in texts]

    @torch.inference_mode()
    def loglikelihood(self, requests: list[Request]) -> list[list[ChoiceScore]]:
        """Sum of log-probs of each choice's tokens after the prompt (eval_mm's multiple-choice
        scoring: prompt and choice tokenized separately, then concatenated)."""
        rows: list[tuple[int, list[int], int]] = []  # (request index, ids, n choice tokens)
        for i, r in enumerate(requests):
            prompt = self.tokenizer.encode_parts(r.parts, r.plain_text)
            for choice in r.choices or []:
                target = self.tokenizer.encode(choice)
                rows.append((i, prompt + target, len(target)))
        features: dict[int, torch.Tensor] = {}
        scores: list[ChoiceScore] = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            for i, _, _ in chunk:
                if i not in features and requests[i].images:
                    pixels = torch.stack(self.images(requests[i])).to(self.model.device, self.model.dtype)
                    features[i] = self.model.transformer.visual(pixels)
            scores.extend(self._score_rows(chunk, features))
        result: list[list[ChoiceScore]] = [[] for _ in requests]
        for (i, _, _), score in zip(rows, scores):
            result[i].append(score)
        return result

    def _score_rows(
        self, chunk: list[tuple[int, list[int], int]], features: dict[int, torch.Tensor]
    ) -> list[ChoiceScore]:
        batch = self.tokenizer.pad([ids for _, ids, _ in chunk], return_tensors="pt")
        ids = batch["input_ids"].to(self.model.device)
        mask = batch["attention_mask"].to(self.model.device)
        keep = max(n for _, _, n in chunk)
        image_features = [features[i] for i, _, _ in chunk if i in features]
        logits = self.model(
            input_ids=ids[:, :-1],
            attention_mask=mask[:, :-1],
            image_features=torch.cat(image_features) if image_features else None,
            logits_to_keep=keep,
        ).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, -keep:, None])[..., 0]
        return [
            ChoiceScore(logprob=float(logprobs[row, keep - n :].sum()), n_tokens=n)
            for row, (_, _, n) in enumerate(chunk)
        ]
