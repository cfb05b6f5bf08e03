"""The bundled, faithful Qwen-VL: config, tokenizer, processor and a transformers model whose
parameter names equal the official checkpoint's keys."""

from evalkit.models.qwen_vl.config import QwenVLConfig
from evalkit.models.qwen_vl.modeling import QwenVLForCausalLM
from evalkit.models.qwen_vl.processor import QwenVLProcessor
from evalkit.models.qwen_vl.tokenizer import QwenTokenizer

__all__ = ["QwenVLConfig", "QwenVLForCausalLM", "QwenVLProcessor", "QwenTokenizer"]
