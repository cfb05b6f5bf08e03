"""`--model demo`: the bundled Qwen-VL harness on the packaged demo checkpoint.

Nothing demo-specific happens at inference: this is `qwen-vl:evalkit/demo/assets/model` under a
short name, so the default run exercises the same loading, tokenizer, processor and generation
code as a real Qwen-VL checkpoint.
"""

from __future__ import annotations

from typing import Any

from evalkit.demo.checkpoint import MODEL_DIR
from evalkit.models.qwen_vl.adapter import QwenVLModel


class DemoModel:
    """Builds the demo model; `demo:PATH` loads another checkpoint made by `evalkit.demo.train`."""

    @classmethod
    def from_spec(cls, path: str = "", **options: Any) -> QwenVLModel:
        model = QwenVLModel.from_spec(path or str(MODEL_DIR), **options)
        model.name = cls.name(path)
        return model

    @classmethod
    def spec_identity(cls, path: str = "", **options: Any) -> dict[str, Any]:
        """`identity()` of the model `from_spec` builds, without loading it."""
        return QwenVLModel.spec_identity(path or str(MODEL_DIR), name=cls.name(path), **options)

    @staticmethod
    def name(path: str) -> str:
        return "demo" if not path else f"demo:{path}"
