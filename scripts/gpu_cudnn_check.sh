#!/usr/bin/env bash
# One prepared run on a lent GPU machine: candle's CUDA path with and without the `cudnn`
# feature, against PyTorch on the same GPU, plus Keras parity with cuDNN convolutions.
# Carried in gpu-bin/gpu-bin.tgz (built here, see ../shared/GPU.md):
#   forward_cuda  = cargo bench --no-run --features cuda  --bench forward
#   forward_cudnn = cargo bench --no-run --features cudnn --bench forward
#   parity_cudnn  = cargo test --release --no-run --features cudnn --test suite (run it with the filter parity::)
# The cuDNN build links libcudnn.so.9; the GPU machine's PyTorch wheels provide it.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
(cd gpu-bin && tar xzf gpu-bin.tgz)
NV=$(python3 -c "import nvidia,os;print(nvidia.__path__[0])")
CUDNN_LIB=$(dirname "$(find "$NV" -name 'libcudnn.so.9' | head -1)")
export LD_LIBRARY_PATH="$NV/cu13/lib:$CUDNN_LIB"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
echo "cudnn from $CUDNN_LIB" | tee -a "$OUT/gpu.txt"
python3 -c "import torch;print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())" | tee -a "$OUT/gpu.txt"
echo "== parity on cuda with cudnn" | tee "$OUT/parity.txt"
timeout 120 ./gpu-bin/parity_cudnn --nocapture cuda 2>&1 | tail -15 | tee -a "$OUT/parity.txt"
for b in cuda cudnn; do
  echo "== forward bench, $b build (cuda group)" | tee "$OUT/bench_$b.txt"
  timeout 150 ./gpu-bin/forward_$b --bench resnet152v2_forward_cuda --warm-up-time 2 --measurement-time 8 2>&1 \
    | grep -E "time:|forward|Benchmarking.*: Analyzing|panicked|error" | tee -a "$OUT/bench_$b.txt"
done
echo "== pytorch baseline" | tee "$OUT/torch.txt"
timeout 150 python3 scripts/torch_gpu_baseline.py 2>&1 | tail -20 | tee -a "$OUT/torch.txt"
