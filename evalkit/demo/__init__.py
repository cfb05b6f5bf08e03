"""The embedded demo: a synthetic vision-language suite (`data.py`, tasks/demo/*.yaml) and a small
Qwen-VL trained on it (`train.py`, shipped in `assets/model/`), so `evalkit run` with no arguments
runs real tasks through the real Qwen-VL code path in about a minute on a laptop CPU."""
