"""The `lmms_eval.models` entry point: names the plugin class without importing it.

lmms-eval 0.7 loads every manifest in that entry-point group whenever it builds its model
registry (any `lmms-eval` command), so this module stays import-light: the class path is
resolved (and torch, transformers and the Qwen-VL code imported) only when
`--model evalkit_qwen_vl` is actually asked for.
"""

from __future__ import annotations

from lmms_eval.models.registry_v2 import ModelManifest

MANIFEST = ModelManifest(
    model_id="evalkit_qwen_vl",
    simple_class_path="evalkit.integrations.lmms_eval.EvalkitQwenVL",
)
