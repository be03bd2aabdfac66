#!/usr/bin/env bash
# Compare our fast CPU forward (and a training step) with ONNX Runtime and PyTorch, back to back.
#
#   scripts/compare_cpu.sh [--runs 7] [--batches 1,8] [--threads 2] [--no-train]
#   scripts/compare_cpu.sh --model efficientnet-lite0 [--candle] [--generic] [--train-batch 8] [--static-pad]
#
# Makes a virtual environment (VENV, default target/compare-venv, ignored by git) with torch, timm and
# onnxruntime from PyPI, builds the timing servers (benches/fast_forward.rs and benches/efficientnet.rs,
# release profile), then runs scripts/compare_cpu.py, which prints median times and the ratios ours/theirs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-target/compare-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --upgrade pip
    "$VENV/bin/pip" install torch onnxruntime onnx onnxscript numpy timm
fi
"$VENV/bin/python" -c "import timm" 2>/dev/null || "$VENV/bin/pip" install timm
cargo bench --bench fast_forward --bench efficientnet --no-run
exec "$VENV/bin/python" scripts/compare_cpu.py "$@"
