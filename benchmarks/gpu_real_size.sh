#!/usr/bin/env bash
# Real-size Qwen-VL (ViT-bigG 1.9B + adapter + Qwen-7B: 9.6B parameters) in bf16 on one GPU, with
# random weights built from the released config (no checkpoint, no download), against
# transformers generate() on the same weights. Run from anywhere; writes the --json figures to
# benchmarks/results/ (or the path given as $1) and prints the table. Add the result to
# benchmarks/RESULTS.md. Extra arguments after the path go to `evalkit bench` (e.g. --compile).
#
# Two runs: the engine as it is by default, then with --static-decode (the decode step captured
# once per batch as a CUDA graph and replayed, static_decode.py; baselines skipped). Each prints
# "engine decode at batch 1: X ms/step, limit Y ms/step": the step against its weight-read
# (bandwidth) limit; the target is within 1.5x of it. A failing second run does not lose the first.
#
#   benchmarks/gpu_real_size.sh [OUT.json] [extra evalkit bench arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results/gpu_real_size_bf16_$(date -u +%Y%m%dT%H%M%SZ).json}"
shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
common=(--config benchmarks/configs/qwen_vl_real.json --dtype bf16 --device cuda
        --requests 256 --images 64 --max-new-tokens 10)
python -m evalkit bench "${common[@]}" --baseline-requests 32 --baseline-batch-sizes 4,8,16,32 \
    --json "$out" "$@"
python -m evalkit bench "${common[@]}" --no-baseline --static-decode \
    --json "${out%.json}_static_decode.json" "$@" || echo "gpu_real_size.sh: the --static-decode run failed" >&2
