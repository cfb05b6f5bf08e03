"""Qwen-VL configuration: the fields and defaults of the official `configuration_qwen.py`.

The released `config.json` files are read as they are (model_type "qwen"); fields this class
does not know are kept as attributes, missing ones take the official defaults. The `visual`
sub-dict configures the ViT and the resampler adapter; its missing keys are filled in too.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

# OpenCLIP ViT-bigG/14 shape as used by Qwen-VL, plus the 256-query adapter.
VISUAL_DEFAULTS: dict[str, Any] = {
    "width": 1664,
    "layers": 48,
    "heads": 16,
    "mlp_ratio": 4.9231,
    "patch_size": 14,
    "image_size": 448,
    "output_dim": 4096,
    "n_queries": 256,
    "image_start_id": 151857,
}


class QwenVLConfig(PretrainedConfig):
    """Language-model fields of Qwen-7B plus the `visual` dict of the vision tower."""

    model_type = "qwen"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    vocab_size: int = 151936
    hidden_size: int = 4096
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    emb_dropout_prob: float = 0.0
    attn_dropout_prob: float = 0.0
    layer_norm_epsilon: float = 1e-6
    initializer_range: float = 0.02
    max_position_embeddings: int = 8192
    scale_attn_weights: bool = True
    use_cache: bool = True
    bf16: bool = False
    fp16: bool = False
    fp32: bool = False
    kv_channels: int = 128
    rotary_pct: float = 1.0
    rotary_emb_base: float = 10000
    use_dynamic_ntk: bool = True
    use_logn_attn: bool = True
    use_flash_attn: Any = "auto"
    intermediate_size: int = 22016
    no_bias: bool = True
    tie_word_embeddings: bool = False
    seq_length: int = 2048
    visual: dict[str, Any] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        self.visual = {**VISUAL_DEFAULTS, **(self.visual or {})}
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        """Rotary covers `rotary_pct` of each head (1.0 in every released checkpoint)."""
        return int(self.kv_channels * self.rotary_pct)
