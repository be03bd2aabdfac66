#!/usr/bin/env bash
# The model shipped in models/fracatlas-lite0-384 (issue 24), as measured for the README:
# EfficientNet-Lite0 with timm's ImageNet weights at 384 px; the frozen stages (stem to blocks.4)
# run once per image and view (the picture and its mirror) into a stage cache (f16, runs/cache384-VARIANT,
# reused while weights, size and images are the same); the last 2 stages, the head and a
# localization map on the stride-16 features train on it for 6 epochs (Adam, head 1e-3, stages
# 1e-4, best epoch by validation loss), the map from FracAtlas's fracture boxes (per-cell binary
# cross-entropy, weight 1, positive cells x10, boxes grown 10 %). Without --box-loss-weight, the
# same recipe without boxes (the comparison on the validation part). Only the validation part is
# scored here (--no-test); the test part is scored once, on the shipped bundle, by `evaluate`.
# Variant `augmented`: the boxes recipe on a cache of three views, the picture and two augmented
# views (train::ViewAugmentation: each picture resized by another program, re-encoded as JPEG,
# noisy, turned, zoomed, shifted, mirrored, as drawn for it; its boxes follow), for 8 epochs.
# Logs go to docs/runs/. Usage: scripts/fracatlas_lite0_384.sh [FRACATLAS_DIR] [boxes|plain|augmented]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-${FRACATLAS_DIR:-../shared/data/fracatlas}}"
variant="${2:-boxes}"
weights="${LITE0_WEIGHTS:-../shared/weights/efficientnet_lite0_imagenet.safetensors}"
cargo build --release --example train_fracatlas
bin="${CARGO_TARGET_DIR:-target}/release/examples/train_fracatlas"
boxes=()
if [ "$variant" = boxes ]; then boxes=(--box-loss-weight 1); fi
epochs=6
if [ "$variant" = augmented ]; then
  boxes=(--box-loss-weight 1 --cache-views original,augmented:1,augmented:2)
  epochs=8
fi
mkdir -p docs/runs runs
{ time "$bin" --data "$data" --backbone efficientnet-lite0 --weights "$weights" --device cpu \
    --image-size 384 --fine-tune-stages 2 --learning-rate 1e-3 --backbone-learning-rate 1e-4 \
    --epochs "$epochs" --stage-cache "runs/cache384-$variant" "${boxes[@]}" --no-test \
    --out "runs/lite0-384-$variant"; } 2>&1 | tee "docs/runs/lite0-384-$variant.log"
