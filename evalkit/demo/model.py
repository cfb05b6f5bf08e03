"""`--model demo`: the bundled Qwen-VL harness on the packaged demo checkpoint.

Nothing demo-specific happens at inference: this is `qwen-vl:evalkit/demo/assets/model` under a
short name, so the default run exercises the same loading, tokenizer, processor and generation
code as a real Qwen-VL checkpoint.
"""

from __future__ import annotations

from typing import Any

from evalkit.demo.checkpoint import MODEL_DIR
from evalkit.models.qwen_vl.harness import QwenVLModel


class DemoModel:
    """Builds the demo model; `demo:PATH` loads another checkpoint made by `evalkit.demo.train`."""

    @classmethod
    def from_spec(cls, path: str = "", **options: Any) -> QwenVLModel:
        model = QwenVLModel.from_spec(path or str(MODEL_DIR), **options)
        model.name = "demo" if not path else f"demo:{path}"
        return model
