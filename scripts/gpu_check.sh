#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (and gptoss installed with its dev extra): the triton kernels compiled, not
# interpreted, against their reference twins; the gpu-marked end-to-end tests (parity with the CPU, CUDA-graph decode,
# the batched engine, bench); then benchmarks/bench_gpu.py with any arguments given here, its JSON last.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device')"
python -m pytest -q tests/ops/test_triton_moe.py tests/ops/test_triton_attention.py tests/ops/test_triton_norm.py \
  tests/gpu tests/cli/test_device.py
python -m benchmarks.bench_gpu "$@"
