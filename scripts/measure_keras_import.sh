#!/usr/bin/env bash
# Import time and peak memory of the full-size notebook model (ResNet152V2 + head) in its three
# saved forms: `convert_keras_model` reads the file (timed alone), imports it as a classifier
# with the CPU fast path prepared (timed), and saves a bundle; /usr/bin/time -v gives the peak
# resident memory of the whole run. Make the models first (scripts/make_notebook_model.py).
#
#   scripts/measure_keras_import.sh /work/targets/keras/notebook_full [release]
set -euo pipefail
dir=${1:?folder written by scripts/make_notebook_model.py}
profile=${2:-dev}
target=${CARGO_TARGET_DIR:-target}
if [ "$profile" = release ]; then
  cargo build --release --example convert_keras_model
  bin=$target/release/examples/convert_keras_model
else
  cargo build --example convert_keras_model
  bin=$target/debug/examples/convert_keras_model
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for file in notebook_model.h5 notebook_model.keras notebook_model_tf_keras.h5; do
  /usr/bin/time -v "$bin" "$dir/$file" "$out/$file.bundle" 2>&1 |
    grep -E "read in|imported as|Maximum resident|Elapsed \(wall"
done
