"""The demo model's size and its checkpoint files, in the official Qwen-VL layout.

`demo_config` is Qwen-VL made small through the config only (the code path is the real one):
a 128px image in 8px patches (a 16x16 grid, the layout grid of the demo scenes), a narrow ViT, the cross-attention resampler and a 3-layer Qwen
LM of width 128 (the minimum: the resampler has `output_dim // 128` heads and output_dim is the
LM width). The resampler keeps 256 queries because Qwen's tokenizer always expands `<img>...</img>`
to 256 slots. `save_checkpoint` writes what the released checkpoints hold: config.json (model_type
"qwen", the `visual` dict), generation_config.json, tokenizer_config.json, qwen.tiktoken and
model.safetensors in bfloat16, with the official key names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from evalkit.models.qwen_vl.config import QwenVLConfig
from evalkit.models.qwen_vl.tokenizer import SPECIAL_TOKENS
from evalkit.resources import DEMO_CHECKPOINT

MODEL_DIR = DEMO_CHECKPOINT  # what `--model demo` loads (evalkit.models finds it through resources.py)

VISUAL = {"width": 128, "layers": 4, "heads": 4, "mlp_ratio": 2.0, "patch_size": 8, "image_size": 128,
          "output_dim": 128, "n_queries": 256}
LANGUAGE = {"hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4, "kv_channels": 32,
            "intermediate_size": 512}


def special_ids(n_ranks: int) -> dict[str, int]:
    """Qwen numbers its special tokens from len(ranks) upward (151643.. in the real vocabulary)."""
    return {tok: n_ranks + i for i, tok in enumerate(SPECIAL_TOKENS)}


def config_dict(n_ranks: int) -> dict[str, Any]:
    """config.json of the demo model, with the keys of the released Qwen-VL config."""
    n_tokens = n_ranks + len(SPECIAL_TOKENS)
    vocab_size = -(-n_tokens // 64) * 64  # padded as the real 151,860 -> 151,936
    return {
        "architectures": ["QWenLMHeadModel"],
        "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig",
                     "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"},
        "attn_dropout_prob": 0.0,
        "bf16": False,
        "emb_dropout_prob": 0.0,
        "fp16": False,
        "fp32": False,
        **LANGUAGE,
        # read only when weights are initialised: at 0.02 (the release's value) the demo model
        # learns several times slower from scratch (measured), at 0.1 it learns in minutes
        "initializer_range": 0.1,
        "layer_norm_epsilon": 1e-06,
        "max_position_embeddings": 8192,
        "model_type": "qwen",
        "no_bias": True,
        "onnx_safe": None,
        "rotary_emb_base": 10000,
        "rotary_pct": 1.0,
        "scale_attn_weights": True,
        "seq_length": 2048,
        "tie_word_embeddings": False,
        "tokenizer_type": "QWenTokenizer",
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_dynamic_ntk": True,
        "use_flash_attn": False,
        "use_logn_attn": True,
        "visual": {**VISUAL, "image_start_id": special_ids(n_ranks)["<img>"]},
        "vocab_size": vocab_size,
    }


def make_config(n_ranks: int) -> QwenVLConfig:
    data = config_dict(n_ranks)
    for key in ("architectures", "auto_map"):
        data.pop(key)
    return QwenVLConfig(**data)


def save_checkpoint(model: torch.nn.Module, vocab_file: Path, out_dir: str | Path, n_ranks: int) -> Path:
    """Write the official-layout checkpoint of `model` to `out_dir` (the vocabulary copied in)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eod = special_ids(n_ranks)["<|endoftext|>"]
    (out / "config.json").write_text(json.dumps(config_dict(n_ranks), indent=2) + "\n")
    generation = {"chat_format": "raw", "do_sample": False, "eos_token_id": eod, "pad_token_id": eod,
                  "max_new_tokens": 512, "max_window_size": 6144, "stop_words_ids": [[eod]]}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    tokenizer = {"model_max_length": 8192, "tokenizer_class": "QWenTokenizer",
                 "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]}}
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2) + "\n")
    if Path(vocab_file).resolve() != (out / "qwen.tiktoken").resolve():
        (out / "qwen.tiktoken").write_bytes(Path(vocab_file).read_bytes())
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
