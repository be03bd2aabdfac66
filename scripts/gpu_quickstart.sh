#!/usr/bin/env bash
# Second prepared GPU run: the offline quickstart end to end on cuda:0 (train, evaluate, save,
# reload, classify), then the classify example on one image with the saved bundle.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
(cd gpu-bin && tar xzf gpu-bin.tgz)
export LD_LIBRARY_PATH=$(python3 -c "import nvidia,os;print(os.path.join(nvidia.__path__[0],'cu13','lib'))")
start=$(date +%s)
timeout 400 ./gpu-bin/quickstart --device cuda:0 --out /tmp/qs 2>&1 | tee "$OUT/quickstart.txt" | tail -45
echo "quickstart exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s" | tee -a "$OUT/quickstart.txt"
img=$(ls /tmp/qs/data/images/Fractured/*.jpg | head -1)
timeout 60 ./gpu-bin/classify /tmp/qs/bundle "$img" --device cuda:0 2>&1 | tee "$OUT/classify.txt"
