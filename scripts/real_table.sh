#!/usr/bin/env bash
# The real-weights table: NOLA, qNOLA, LoRA r=1/r=4 and HF PEFT's VeRA, VB-LoRA, FourierFT, TinyLoRA trained
# on SmolLM2-135M-Instruct (E2E) by llama_ft.py, decoded by llama_beam.py, scored by measure_scores.py.
# The steps are in scripts/real_table.py; the model comes from
# `bash download_pretrained_checkpoints.sh smollm2-135m-instruct`.
# Usage: bash scripts/real_table.sh [--out DIR] [--quick]   (-> results/real_e2e.{md,json,png})
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${NOLA_DATA_MIRROR:-}" ] && [ -d ../shared/data ]; then
  NOLA_DATA_MIRROR=$(cd ../shared && pwd)
  export NOLA_DATA_MIRROR
fi
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || { echo "error: no $PY: run pip install -r requirement.txt in a .venv first (see README)" >&2; exit 2; }
exec "$PY" -m scripts.real_table "$@"   # as a module from the repository root
