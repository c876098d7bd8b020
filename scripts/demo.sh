#!/usr/bin/env bash
# The paper's pipeline in miniature on CPU: a small GPT-2 pre-trained once on the WebNLG dev pairs and
# the E2E valid references (cached under ${NOLA_CACHE:-~/.cache/nola}), adapted to E2E with NOLA through
# torch.distributed.launch -> gpt2_ft.py -> gpt2_beam.py -> gpt2_decode.py -> measure_scores.py,
# and scored next to the unadapted base. The steps are in scripts/demo.py.
# Usage: bash scripts/demo.sh [--gpt2 sm|md|lg] [--out DIR]   (outputs under ./demo_run, or $DEMO_DIR)
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
exec .venv/bin/python -m scripts.demo "$@"   # as a module from the repository root (scripts.pretrain)
