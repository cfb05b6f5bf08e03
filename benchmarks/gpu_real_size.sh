#!/usr/bin/env bash
# Real-size Qwen-VL (ViT-bigG 1.9B + adapter + Qwen-7B: 9.6B parameters) in bf16 on one GPU, with
# random weights built from the released config (no checkpoint, no download), against
# transformers generate() on the same weights. Run from anywhere; writes the --json figures to
# benchmarks/results/ (or the path given as $1) and prints the table. Add the result to
# benchmarks/RESULTS.md. Extra arguments after the path go to `evalkit bench` (e.g. --compile).
#
#   benchmarks/gpu_real_size.sh [OUT.json] [extra evalkit bench arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results/gpu_real_size_bf16_$(date -u +%Y%m%dT%H%M%SZ).json}"
shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -m evalkit bench --config benchmarks/configs/qwen_vl_real.json --dtype bf16 --device cuda \
    --requests 256 --images 64 --max-new-tokens 10 \
    --baseline-requests 32 --baseline-batch-sizes 4,8,16,32 \
    --json "$out" "$@"
