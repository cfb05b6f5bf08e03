"""Models the runner can drive, built from a spec string `KIND[:PATH]`.

`replay:PATH` scores a predictions file; `qwen-vl:PATH` is the bundled Qwen-VL on an
official-layout checkpoint; `demo` is the bundled demo model. Imports are lazy so
`evalkit tasks` never pays for torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from evalkit.models.base import Model, ModelError

_KINDS = {
    "replay": "evalkit.models.replay:ReplayModel",
    "qwen-vl": "evalkit.models.qwen_vl.harness:QwenVLModel",
    "demo": "evalkit.demo.model:DemoModel",
}


def load_model(spec: str, **options: Any) -> Model:
    kind, _, path = spec.partition(":")
    if kind not in _KINDS:
        raise ModelError(f"unknown model kind {kind!r} in {spec!r}; use one of: {', '.join(k + ':PATH' for k in _KINDS)}")
    module_name, _, cls_name = _KINDS[kind].partition(":")
    try:
        cls = getattr(import_module(module_name), cls_name)
    except ImportError as exc:
        raise ModelError(f"model kind {kind!r} is not available: {exc}") from exc
    if not path and kind != "demo":
        raise ModelError(f"model {spec!r} needs a path: {kind}:PATH")
    return cls.from_spec(path, **options)


__all__ = ["Model", "ModelError", "load_model"]
