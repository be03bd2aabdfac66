#!/usr/bin/env bash
# One prepared run on a lent GPU machine (no Rust there): carried cuda binaries in gpu-bin/.
# Runs the Keras parity test on cuda:0, the forward bench on CPU and GPU, and PyTorch's
# ResNet152V2-class forward on the same GPU as a baseline. Results go to $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
(cd gpu-bin && tar xzf gpu-bin.tgz)
export LD_LIBRARY_PATH=$(python3 -c "import nvidia,os;print(os.path.join(nvidia.__path__[0],'cu13','lib'))")
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
echo "== parity on cuda" | tee "$OUT/parity.txt"
timeout 120 ./gpu-bin/suite parity:: --nocapture 2>&1 | tail -30 | tee -a "$OUT/parity.txt"
echo "== forward bench (cuda group)" | tee "$OUT/bench.txt"
timeout 300 ./gpu-bin/forward --bench resnet152v2_forward_cuda --warm-up-time 2 --measurement-time 10 2>&1 | grep -E "time:|forward|Benchmarking.*: Analyzing" | tee -a "$OUT/bench.txt"
echo "== pytorch baseline" | tee "$OUT/torch.txt"
timeout 180 python3 scripts/torch_gpu_baseline.py 2>&1 | tail -20 | tee -a "$OUT/torch.txt"
