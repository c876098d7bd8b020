#!/usr/bin/env bash
# The CUDA checks in one go, for any machine with an NVIDIA GPU and a CUDA build of torch (about
# 5 minutes on one current GPU; the pieces have time limits that add up to under 8):
#   1. the tests marked `cuda` (deselected on CPU machines): bases generated on CUDA bit-identical to
#      the CPU's, on-the-fly factors on CUDA = materialised on CPU, LoRA dropout masks on CUDA = nn.Dropout's,
#      trimmed + gathered training = the padded full head on CUDA (NOLA in both modes, qNOLA, LoRA with
#      dropout), fp16 (loss scaling) and bf16 steps against fp32, and with 2+ GPUs two processes over
#      NCCL = one process with twice the batch;
#   2. benchmarks/train_throughput.py on the GPU (GPT-2 M, all 24 layers, the whole validation split);
#   3. scripts/llama/gpu_check_4bit.sh: the 4-bit NF4 (bitsandbytes) LLaMA path on a tiny model, when
#      bitsandbytes is installed (otherwise it is reported as not run).
# Writes benchmarks/results/gpu_check.json: the GPU, every test's outcome and time, the benchmark.
# Usage: bash scripts/gpu_check.sh      Environment: PYTHON (default .venv/bin/python), NOLA_DATA_MIRROR.
set -uo pipefail
cd "$(dirname "$0")/.."
export NOLA_DATA_MIRROR="${NOLA_DATA_MIRROR:-$(cd .. && pwd)/shared}"
PY="${PYTHON:-.venv/bin/python}"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "error: $PY sees no CUDA device: run scripts/gpu_check.sh on a GPU machine with a CUDA build of torch" >&2
  exit 2
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
echo "== cuda tests" >&2
timeout 270 "$PY" -m pytest -m cuda -q -p no:cacheprovider --junitxml="$TMP/cuda.xml"
TESTS=$?
echo "== throughput benchmark" >&2
timeout 200 "$PY" benchmarks/train_throughput.py --device cuda --out "$TMP/throughput.json"
BENCH=$?
echo "== 4-bit LLaMA path" >&2
if "$PY" -c "import bitsandbytes" 2>/dev/null; then
  timeout 120 bash scripts/llama/gpu_check_4bit.sh
  FOURBIT=$?
else
  echo "bitsandbytes is not installed: the 4-bit check did not run (pip install bitsandbytes)" >&2
  FOURBIT=0
fi
"$PY" scripts/gpu_report.py --junit "$TMP/cuda.xml" --tests_status "$TESTS" --throughput "$TMP/throughput.json" \
  --bench_status "$BENCH" --out benchmarks/results/gpu_check.json || exit 1
[ "$TESTS" -eq 0 ] && [ "$BENCH" -eq 0 ] && [ "$FOURBIT" -eq 0 ]
