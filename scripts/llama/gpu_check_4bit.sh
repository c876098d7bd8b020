#!/usr/bin/env bash
# The 4-bit NF4 (bitsandbytes) path on CUDA: tiny random LLaMA, NOLA training, adapter reload, MMLU.
# Usage: bash scripts/llama/gpu_check_4bit.sh [--keep DIR]   (needs a GPU and `pip install bitsandbytes`)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$here/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
cd "$here" || exit 2
exec "$PY" -m scripts.llama.gpu_check_4bit "$@"   # as a module from the repository root, for scripts.tiny_llama
