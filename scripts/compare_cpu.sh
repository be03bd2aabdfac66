#!/usr/bin/env bash
# Compare our fast CPU forward (and a training step) with ONNX Runtime, OpenVINO and PyTorch,
# back to back, for both models (or the one --model names).
#
#   scripts/compare_cpu.sh [--runs 7] [--batches 1,8] [--threads 2] [--no-train]
#   scripts/compare_cpu.sh --model efficientnet-lite0 [--candle] [--generic] [--train-batch 8] [--static-pad]
#
# Makes a virtual environment (VENV, default target/compare-venv, ignored by git) with torch, timm,
# onnxruntime and openvino from PyPI, builds the timing servers (benches/fast_forward.rs and
# benches/efficientnet.rs, release profile), then runs scripts/compare_cpu.py once per model, which
# prints the CPU, median times, GFLOP/s and ratios. The last lines are every model's
#   RATIO <model> <precision> b<batch> ours/<peer> <value>
# lines together (bf16 rows only where the CPU has AVX512_BF16).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-target/compare-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --upgrade pip
    "$VENV/bin/pip" install torch onnxruntime onnx onnxscript numpy timm openvino
fi
for module in timm openvino; do
    "$VENV/bin/python" -c "import $module" 2>/dev/null || "$VENV/bin/pip" install "$module"
done
cargo bench --bench fast_forward --bench efficientnet --no-run

models=(resnet152v2 efficientnet-lite0)
for arg in "$@"; do
    if [ "$arg" = --model ] || [[ "$arg" == --model=* ]]; then models=(); fi
done
if [ ${#models[@]} -eq 0 ]; then
    exec "$VENV/bin/python" scripts/compare_cpu.py "$@"
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for model in "${models[@]}"; do
    echo "=== $model"
    "$VENV/bin/python" scripts/compare_cpu.py --model "$model" "$@" | tee -a "$log"
done
echo
grep '^RATIO ' "$log"
