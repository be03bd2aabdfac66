#!/usr/bin/env bash
# Compare our fast CPU ResNet152V2 forward with ONNX Runtime and PyTorch, back to back.
#
#   scripts/compare_cpu.sh [--runs 7] [--batches 1,8] [--threads 2] [--no-train]
#
# Makes a virtual environment (VENV, default target/compare-venv, ignored by git) with torch and onnxruntime from
# PyPI, builds the timing server (benches/fast_forward.rs, release profile), then runs
# scripts/compare_cpu.py, which prints median times and the ratios ours/theirs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-target/compare-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --upgrade pip
    "$VENV/bin/pip" install torch onnxruntime onnx onnxscript numpy
fi
cargo bench --bench fast_forward --no-run
exec "$VENV/bin/python" scripts/compare_cpu.py "$@"
