#!/usr/bin/env bash
# The EfficientNet-Lite0 transfer-learning runs on the real FracAtlas (issue 12), as measured for
# the README: phase 1 is the notebook's recipe (ImageNet weights, frozen backbone, head
# Dense(256)/Dropout(0.5)/1, Adam 1e-4, the notebook's augmentation, best epoch by validation
# loss); phase 2 fine-tunes the last 2 stages under that head (Adam 1e-4, as measured).
# Logs go to docs/runs/. Usage: scripts/fracatlas_lite0.sh [FRACATLAS_DIR] [EPOCHS1] [EPOCHS2]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-${FRACATLAS_DIR:-../shared/data/fracatlas}}"
epochs1="${2:-10}"
epochs2="${3:-2}"
weights="${LITE0_WEIGHTS:-../shared/weights/efficientnet_lite0_imagenet.safetensors}"
cargo build --release --example train_fracatlas
bin="${CARGO_TARGET_DIR:-target}/release/examples/train_fracatlas"
mkdir -p docs/runs runs
"$bin" --data "$data" --backbone efficientnet-lite0 --weights "$weights" --device cpu \
    --epochs "$epochs1" --out runs/lite0-frozen 2>&1 | tee docs/runs/lite0-frozen.log
"$bin" --data "$data" --backbone efficientnet-lite0 --init-bundle runs/lite0-frozen/bundle \
    --fine-tune-stages 2 --backbone-learning-rate 1e-4 --learning-rate 1e-4 --device cpu \
    --epochs "$epochs2" --out runs/lite0-finetune 2>&1 | tee docs/runs/lite0-finetune.log
