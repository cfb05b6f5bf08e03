"""The model protocol: what the runner needs from any model.

Two calls, both batched, both taking the model-agnostic `Request`: `generate` for free-form
answers and `loglikelihood` for multiple-choice scoring (the paper scores ScienceQA choices
by likelihood, not by generated letters). A model is built from a spec string such as
`qwen-vl:/ckpt/Qwen-VL` or `replay:preds.jsonl` through `evalkit.models.load_model`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from evalkit.errors import EvalkitError
from evalkit.task import ChoiceScore, Request

# --dtype values -> torch dtype names: parsed by the CLI without torch, resolved by the model
DTYPE_NAMES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
               "fp16": "float16", "float16": "float16"}


class ModelError(EvalkitError, RuntimeError):
    """A model that cannot be built or loaded (bad path, bad checkpoint): one clear message."""


@runtime_checkable
class Model(Protocol):
    name: str
    prompt_style: str  # which prompt template of a task to use: "base" or "chat"

    def identity(self) -> dict[str, Any]:
        """Name, path and weight hash: recorded in run.json so results name what produced them."""
        ...

    def generate(self, requests: list[Request]) -> list[str]:
        """One output string per request, in order."""
        ...

    def loglikelihood(self, requests: list[Request]) -> list[list[ChoiceScore]]:
        """For each request, one score per entry of `request.choices`."""
        ...

