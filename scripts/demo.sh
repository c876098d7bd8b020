#!/usr/bin/env bash
# NOLA on real pre-trained weights on a CPU: SmolLM2-135M-Instruct (fetched once into
# pretrained_checkpoints/) adapted to E2E with NOLA through llama_ft.py -> llama_beam.py ->
# measure_scores.py, and scored next to the unadapted model. The steps are in scripts/demo.py.
# Usage: bash scripts/demo.sh [--out DIR]   (outputs under ./demo_run, or $DEMO_DIR)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${NOLA_DATA_MIRROR:-}" ] && [ -d ../shared/data ]; then
  NOLA_DATA_MIRROR=$(cd ../shared && pwd)
  export NOLA_DATA_MIRROR
fi
if [ ! -x .venv/bin/python ]; then
  echo "== [setup] creating .venv and installing requirement.txt"
  python3 -m venv .venv && .venv/bin/pip install -q -r requirement.txt || { echo "demo failed at setup (pip)"; exit 1; }
fi
exec .venv/bin/python -m scripts.demo "$@"   # as a module from the repository root
