"""evalkit: an evaluation harness for vision-language models with a faithful, fast Qwen-VL."""

__version__ = "0.1.0"
