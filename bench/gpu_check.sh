#!/usr/bin/env bash
# The GPU check, in one call on a machine with a CUDA card (well under 5 minutes on a recent
# one). Run from the repository root with the project installed (pip install -e '.[dev]');
# prints Markdown for BENCHMARKS.md. Every step was tried on the CPU first (see BENCHMARKS.md).
#   1. the GPU-marked tests (bf16/fp16 autocast, channels-last, memory after each trial,
#      the analysis on the device);
#   2. resnet18 samples/s: autotune's fine_tune against a bare bf16 channels-last loop, same
#      process, alternating; and the SHAP analysis time on the device;
#   3. a 20-trial demo search on CUDA (GPU memory after each trial: cuda_memory_mb);
#   4. demo trials per hour with 1, 2 and 4 worker processes sharing the card;
#   5. the quick test suite with the card visible, so every search whose device is 'auto' runs
#      on CUDA: the paths that only the CPU had tried (GPU_SUITE_S seconds at most).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export AUTOTUNE_CACHE_DIR=${AUTOTUNE_CACHE_DIR:-$(mktemp -d)}
echo "## GPU check $(date -u +%F): $($PY -c 'import torch; print(torch.cuda.get_device_name(0))')"
echo
echo "### GPU-marked tests"
echo '```'
$PY -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tail -3
echo '```'
echo
$PY bench/gpu_loop.py --device cuda --samples 4096 --rounds 3
echo
$PY bench/gpu_check.py --trials 20
echo
$PY bench/workers.py --device cuda --counts 1 2 4 --trials 12 --epochs 5 --memory 5 20
echo
echo "### The quick test suite with CUDA visible"
echo '```'
workers=$($PY -c 'import xdist' 2>/dev/null && echo "-n 8" || echo "")
timeout "${GPU_SUITE_S:-240}" $PY -m pytest -q -m "not slow" $workers -p no:cacheprovider \
    --continue-on-collection-errors -rfE 2>&1 | tee "${GPU_SUITE_LOG:-/dev/null}" | grep -E "^(FAILED|ERROR)|passed|failed" | tail -40
echo '```'
