"""QwenVLAdapter: the runner-facing adapter (evalkit.models.base.Model) over QwenVLForCausalLM.

By default `generate` and `loglikelihood` run on the batched engine (engine.py: static KV
cache, each distinct image encoded once, per-request stop). `engine="hf"` selects the plain
path through transformers `generate()` in batches: the baseline `evalkit bench` compares with
and the reference the engine is tested against. Requests are turned into text with an empty
`<img></img>` span per image and the images are passed explicitly, so nothing is read from
paths written into prompts. Results do not depend on batch size or padding (positions come
from the attention mask).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from evalkit.models.base import DTYPE_NAMES, ModelError
from evalkit.models.qwen_vl.checkpoint import weight_files
from evalkit.models.qwen_vl.engine import QwenVLEngine
from evalkit.models.qwen_vl.engine_types import EngineConfig
from evalkit.models.qwen_vl.hf_generate import HFGenerate
from evalkit.models.qwen_vl.modeling import QwenVLForCausalLM
from evalkit.models.qwen_vl.processor import QwenVLProcessor
from evalkit.models.qwen_vl.scheduler import OnBatch
from evalkit.models.qwen_vl.tokenizer import VOCAB_FILE
from evalkit.task import ChoiceScore, ImageError, Request

DTYPES = {name: getattr(torch, torch_name) for name, torch_name in DTYPE_NAMES.items()}
HASH_CHUNK = 1 << 20
ENGINES = ("fast", "hf")
__all__ = ["QwenVLAdapter"]


def resolve_dtype(dtype: str | None, device: str) -> torch.dtype:
    """The dtype a model loads in: the one asked for, else bf16 on a GPU that has it, else fp32."""
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise ModelError(f"unknown dtype {dtype!r}; use one of fp32, bf16, fp16")


def check_checkpoint_dir(path: str) -> Path:
    ckpt = Path(path)
    if not (ckpt / "config.json").is_file():
        raise ModelError(f"{ckpt}: not a checkpoint directory (no config.json)")
    if not (ckpt / VOCAB_FILE).is_file():
        raise ModelError(f"{ckpt / VOCAB_FILE}: tokenizer file is missing; copy it from the Qwen-VL release")
    return ckpt


def checkpoint_identity(path: str, name: str, dtype: torch.dtype) -> dict[str, Any]:
    """Name, path and a weight fingerprint: sha256 over each weight file's name, size, first and last
    MiB (cheap on multi-GB files; catches re-downloads and different checkpoints)."""
    digest = hashlib.sha256()
    for file in weight_files(path):
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with file.open("rb") as f:
            digest.update(f.read(HASH_CHUNK))
            f.seek(max(size - HASH_CHUNK, 0))
            digest.update(f.read(HASH_CHUNK))
    config = json.loads((Path(path) / "config.json").read_text())
    return {
        "name": name,
        "path": str(Path(path).resolve()),
        "weights_sha256": digest.hexdigest(),
        "weights_hash_method": "sha256 of name, size, first and last MiB of each weight file",
        "dtype": str(dtype).removeprefix("torch."),
        "architecture": config.get("model_type", "qwen"),
    }


def _report_all(results: list, on_batch: OnBatch | None) -> list:
    if on_batch is not None and results:
        on_batch(list(range(len(results))), results)
    return results


def exact_fp32(model: torch.nn.Module) -> None:
    """fp32 on a GPU means fp32: TF32 off for matmuls and convolutions (cuDNN allows TF32 by
    default, which the ViT's patch convolution would use). TF32 rounds inputs to 10 mantissa bits
    in a way that depends on the kernel chosen, so outputs would depend on the batch size and
    differ from generate()'s; evalkit's fp32 parity and batch invariance hold only without it.
    Process-wide (torch has no per-module switch); bf16/fp16 models leave it alone."""
    param = next(model.parameters(), None)
    if param is not None and param.dtype == torch.float32 and param.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


class QwenVLAdapter:
    """Qwen-VL behind the Model protocol. `prompt_style` picks the task template ("base"/"chat");
    `engine` is "fast" (engine.py) or "hf" (transformers generate()), kept as `backend` beside
    the engine itself (`engine`); `batch_size` is an int or "auto" (the engine finds the largest
    batch that fits; the hf path then uses 8)."""

    streams_batches = True  # generate/loglikelihood take on_batch (runner.py saves each batch as it finishes)

    def __init__(
        self,
        model: QwenVLForCausalLM,
        processor: QwenVLProcessor,
        path: str,
        batch_size: int | str = 8,
        prompt_style: str = "base",
        name: str | None = None,
        engine: str = "fast",
        engine_config: EngineConfig | None = None,
        weights: str | None = None,
    ):
        """`weights`: how the weights were made when they are not `path`'s (bench's random ones):
        `identity()` then says so instead of fingerprinting files that are not what runs."""
        if engine not in ENGINES:
            raise ModelError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
        self.model = model.eval()
        exact_fp32(self.model)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.path = path
        auto = batch_size == "auto"
        self.batch_size = 8 if auto else max(int(batch_size), 1)
        self.prompt_style = prompt_style
        self.name = name or f"qwen-vl:{Path(path).name}"
        self.backend = engine
        config = engine_config or EngineConfig()
        config.batch_size = None if auto else self.batch_size
        self.engine = QwenVLEngine(self.model, processor, config)
        self._identity: dict[str, Any] | None = None if weights is None else {"name": self.name, "weights": weights}

    @classmethod
    def from_spec(
        cls,
        path: str,
        dtype: str | None = None,
        device: str | None = None,
        batch_size: int | str = 8,
        prompt_style: str = "base",
        engine: str = "fast",
        engine_config: EngineConfig | None = None,
        name: str | None = None,
    ) -> QwenVLAdapter:
        """Load a local checkpoint dir. dtype: fp32/bf16/fp16 (default bf16 on CUDA, else fp32);
        batch_size: an int or "auto"; engine: "fast" or "hf" (transformers generate());
        engine_config: the engine's settings (e.g. compile), its batch size set from batch_size;
        name: the model's name in results (default `qwen-vl:<folder>`)."""
        if batch_size != "auto" and not (isinstance(batch_size, int) and batch_size >= 1):
            raise ModelError(f"batch size must be a positive integer or 'auto', got {batch_size!r}")
        ckpt = check_checkpoint_dir(path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = resolve_dtype(dtype, device)
        # straight onto the device, tensor by tensor: no full copy in host memory first (19 GB per
        # rank for the real model, x8 under torchrun)
        model = QwenVLForCausalLM.from_pretrained(ckpt, dtype=torch_dtype, device_map=torch.device(device))
        processor = QwenVLProcessor.from_pretrained(ckpt)
        return cls(model, processor, str(ckpt), batch_size, prompt_style, name, engine, engine_config)

    @classmethod
    def spec_identity(cls, path: str, dtype: str | None = None, device: str | None = None,
                      name: str | None = None, **_: Any) -> dict[str, Any]:
        """What `identity()` of `from_spec(path, dtype, device)` will be, without loading the weights:
        a run folder whose samples are all cached is checked and reported with no model load."""
        ckpt = check_checkpoint_dir(path)
        QwenVLForCausalLM.check_pretrained(ckpt)  # a bad checkpoint fails here, before any run file is written
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return checkpoint_identity(str(ckpt), name or f"qwen-vl:{ckpt.name}", resolve_dtype(dtype, device))

    @property
    def context_length(self) -> int:
        """Positions the language model takes (prompt and new tokens together)."""
        return int(self.model.config.max_position_embeddings)

    def context_error(self, request: Request) -> str | None:
        """Why `request` cannot run in this model's context, or None when it fits."""
        prompt = len(self.tokenizer.encode(request.text(image_token="")))
        if request.choices:
            extra = max(len(self.tokenizer.encode(c)) for c in request.choices)
        else:
            extra = request.max_new_tokens
        if prompt + extra <= self.context_length:
            return None
        return (f"the prompt is {prompt} tokens (+{extra} to generate), longer than the model's context of "
                f"{self.context_length} tokens")

    def identity(self) -> dict[str, Any]:
        """Name, path and a weight fingerprint (see `checkpoint_identity`)."""
        if self._identity is None:
            self._identity = checkpoint_identity(self.path, self.name, self.model.dtype)
        return self._identity

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _images(self, request: Request) -> list[torch.Tensor]:
        try:
            return [self.processor.transform(ref) for ref in request.images]
        except ImageError as exc:
            raise ImageError(f"sample {request.sample_id}: {exc}") from exc

    def generate(self, requests: list[Request], on_batch: OnBatch | None = None) -> list[str]:
        """Outputs in order; `on_batch(indices, outputs)` as each engine batch finishes (runner.py
        saves them then, so a large call still loses at most one batch to a kill)."""
        if self.backend == "fast":
            return self.engine.generate(requests, on_batch)
        return _report_all(self.generate_hf(requests), on_batch)

    def loglikelihood(self, requests: list[Request], on_batch: OnBatch | None = None) -> list[list[ChoiceScore]]:
        if self.backend == "fast":
            return self.engine.loglikelihood(requests, on_batch)
        return _report_all(self.loglikelihood_hf(requests), on_batch)

    @property
    def call_size(self) -> int:
        """Requests the runner should hand over per call: with "auto" batching, enough for the
        engine to sort by length and fill its largest batch several times over."""
        return 1024 if self.engine.config.batch_size is None else self.batch_size

    def generate_hf(self, requests: list[Request]) -> list[str]:
        """transformers generate() on the same model: the baseline and the `engine="hf"` path."""
        return self._hf().generate(requests)

    def loglikelihood_hf(self, requests: list[Request]) -> list[list[ChoiceScore]]:
        return self._hf().loglikelihood(requests)

    def _hf(self) -> HFGenerate:
        return HFGenerate(self.model, self.tokenizer, self._images, self.batch_size)
