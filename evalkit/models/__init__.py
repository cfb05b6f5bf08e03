"""Models the runner can drive, built from a spec string `KIND[:PATH]`.

`replay:PATH` scores a predictions file; `qwen-vl:PATH` is the bundled Qwen-VL on an
official-layout checkpoint; `demo` is the bundled demo model. Imports are lazy so
`evalkit tasks` never pays for torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from evalkit.models.base import Model, ModelError
from evalkit.task import ChoiceScore, Request

_KINDS = {
    "replay": "evalkit.models.replay:ReplayModel",
    "qwen-vl": "evalkit.models.qwen_vl.adapter:QwenVLModel",
    "demo": "evalkit.demo.model:DemoModel",
}


def _parse(spec: str) -> tuple[str, str]:
    kind, _, path = spec.partition(":")
    if kind not in _KINDS:
        raise ModelError(f"unknown model kind {kind!r} in {spec!r}; use one of: {', '.join(k + ':PATH' for k in _KINDS)}")
    if not path and kind != "demo":
        raise ModelError(f"model {spec!r} needs a path: {kind}:PATH")
    return kind, path


def _model_class(kind: str) -> type:
    module_name, _, cls_name = _KINDS[kind].partition(":")
    try:
        return getattr(import_module(module_name), cls_name)
    except ImportError as exc:
        raise ModelError(f"model kind {kind!r} is not available: {exc}") from exc


def load_model(spec: str, **options: Any) -> Model:
    kind, path = _parse(spec)
    return _model_class(kind).from_spec(path, **options)


def lazy_model(spec: str, **options: Any) -> LazyModel:
    """The model of `spec`, built only when it is first needed.

    Checked at once: the spec's syntax. At `identity()` (the runner asks after loading the data):
    the model's files, without loading weights where the kind has `spec_identity` (Qwen-VL, demo),
    so a run whose samples are all cached is checked and reported with no model load. The weights
    load at the first generate/loglikelihood call.
    """
    kind, path = _parse(spec)
    return LazyModel(kind, path, options)


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
