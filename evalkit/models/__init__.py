"""Models the runner can drive, built from a spec string `KIND[:PATH]`.

`replay:PATH` scores a predictions file; `qwen-vl:PATH` is the bundled Qwen-VL on an
official-layout checkpoint; `demo` is the bundled Qwen-VL on the demo checkpoint the package
ships (`demo:PATH`: one made by `evalkit.demo.train`). Every kind is built by a class in
`evalkit.models`; `evalkit.demo` only makes the checkpoint, so the imports run one way
(demo -> models). Imports are lazy so `evalkit tasks` never pays for torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from evalkit.models.base import Model, ModelError
from evalkit.resources import DEMO_CHECKPOINT
from evalkit.task import ChoiceScore, Request


@dataclass(frozen=True)
class Kind:
    """`target` ("module:Class") builds the model: `Class.from_spec(path, **options)`. A kind with
    a `checkpoint` runs on it when the spec names no path, and the model is named by its spec."""

    target: str
    checkpoint: Path | None = None


_KINDS = {
    "replay": Kind("evalkit.models.replay:ReplayModel"),
    "qwen-vl": Kind("evalkit.models.qwen_vl.adapter:QwenVLAdapter"),
    "demo": Kind("evalkit.models.qwen_vl.adapter:QwenVLAdapter", checkpoint=DEMO_CHECKPOINT),
}


def _parse(spec: str) -> tuple[str, str]:
    kind, _, path = spec.partition(":")
    if kind not in _KINDS:
        raise ModelError(f"unknown model kind {kind!r} in {spec!r}; use one of: {', '.join(k + ':PATH' for k in _KINDS)}")
    if not path and _KINDS[kind].checkpoint is None:
        raise ModelError(f"model {spec!r} needs a path: {kind}:PATH")
    return kind, path


def _model_class(kind: str) -> type:
    module_name, _, cls_name = _KINDS[kind].target.partition(":")
    try:
        return getattr(import_module(module_name), cls_name)
    except ImportError as exc:
        raise ModelError(f"model kind {kind!r} is not available: {exc}") from exc


def _arguments(kind: str, path: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(path, options) for the kind's class: a packaged checkpoint fills in the path and names the model."""
    checkpoint = _KINDS[kind].checkpoint
    if checkpoint is None:
        return path, options
    return path or str(checkpoint), {**options, "name": f"{kind}:{path}" if path else kind}


def load_model(spec: str, **options: Any) -> Model:
    kind, path = _parse(spec)
    path, options = _arguments(kind, path, options)
    return _model_class(kind).from_spec(path, **options)


def lazy_model(spec: str, **options: Any) -> LazyModel:
    """The model of `spec`, built only when it is first needed.

    Checked at once: the spec's syntax. At `identity()` (the runner asks after loading the data):
    the model's files, without loading weights where the kind has `spec_identity` (Qwen-VL, demo),
    so a run whose samples are all cached is checked and reported with no model load. The weights
    load at the first generate/loglikelihood call.
    """
    kind, path = _parse(spec)
    return LazyModel(kind, *_arguments(kind, path, options))


class LazyModel:
    """A Model that builds `from_spec(path, **options)` of its kind on first use."""

    def __init__(self, kind: str, path: str, options: dict[str, Any]):
        self.kind, self.path, self.options = kind, path, options
        self.name = kind
        self.prompt_style = options.get("prompt_style", "base")
        self._model: Model | None = None
        self._identity: dict[str, Any] | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> Model:
        if self._model is None:
            self._model = _model_class(self.kind).from_spec(self.path, **self.options)
            self.prompt_style = getattr(self._model, "prompt_style", self.prompt_style)
        return self._model

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            cls = _model_class(self.kind)
            if hasattr(cls, "spec_identity"):
                self._identity = cls.spec_identity(self.path, **self.options)
            else:  # cheap to build (replay)
                self._identity = self.load().identity()
            self.name = self._identity.get("name", self.name)
        return self._identity

    def generate(self, requests: list[Request], **options: Any) -> list[str]:
        return self.load().generate(requests, **options)

    def loglikelihood(self, requests: list[Request], **options: Any) -> list[list[ChoiceScore]]:
        return self.load().loglikelihood(requests, **options)

    def __getattr__(self, name: str) -> Any:
        """How the loaded model wants to be called (`call_size`, `streams_batches`): asked only when
        samples are pending, so the model loads then and not before."""
        if name in ("call_size", "streams_batches"):
            return getattr(self.load(), name)
        raise AttributeError(name)

    def context_error(self, request: Request) -> str | None:
        check = getattr(self.load(), "context_error", None)
        return check(request) if check else None


__all__ = ["LazyModel", "Model", "ModelError", "lazy_model", "load_model"]
