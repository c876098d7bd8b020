#!/usr/bin/env bash
# Alpaca (data/alpaca/alpaca_data.json: instruction, input, output records) and MMLU
# (data/mmlu/{dev,val,test}/<subject>_<split>.csv) for the LLaMA-2 experiment.
#
# Usage: bash scripts/llama/download_data.sh [--root DIR] [--unpinned-ok] [alpaca] [mmlu]
#   --root DIR (default: the repository) receives data/. With $NOLA_DATA_MIRROR set the files are
#   copied from the mirror (same layout: data/alpaca/alpaca_data.json, data/mmlu/data.tar) and the
#   network is never used; otherwise they come from the URLs in src/nola/sources.json.
#   Neither file has a pinned SHA-256 yet, so both are refused unless --unpinned-ok is given; the
#   sum obtained is then printed, to be checked and pinned in src/nola/sources.json.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$here/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
root="$here"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || { echo "error: --root needs a folder" >&2; exit 2; }; root=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
exec "$PY" -m nola.train.download llama --root "$root" ${args[@]+"${args[@]}"}
