#!/usr/bin/env bash
# Check that the current code trains the miniature reproduction's adapters exactly as a finished run did.
# Retrains the four adapted runs of a mini_reproduction.sh folder (same flags, same pre-trained base) into
# NEW_DIR, then compares every log.jsonl row (timing left out) and every adapter tensor with the run's own.
# When all are equal, the run's scores stand for the current code: each run's checkpoint.txt is pointed at
# the new adapter and results/mini_e2e.{md,json,png} is written again (adapter bytes of today's format).
# Usage: bash scripts/mini_retrain_check.sh MINI_DIR NEW_DIR WALL_SECONDS   (about 10 min on 2 cores)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -eq 3 ] || { echo "usage: bash scripts/mini_retrain_check.sh MINI_DIR NEW_DIR WALL_SECONDS" >&2; exit 2; }
old=$(cd "$1" && pwd) new=$2 wall=$3
PY="${PYTHON:-.venv/bin/python}"
base=$(ls "$old"/pretrain/model.*.pt | sort -t. -k2 -n | tail -n 1)
e2e="$old/data/e2e"
source scripts/mini_runs.sh
retrain() {
  local name=$1 dir="$new/runs/$1"
  shift
  mkdir -p "$dir"
  mini_train "$dir" "$base" "$e2e" "$old/base/card.json" "$@" || { echo "training $name failed: $dir/train.log"; exit 1; }
}
mini_adapted retrain
"$PY" scripts/mini_compare.py --old "$old/runs" --new "$new/runs"
"$PY" scripts/mini_report.py --runs "$old/runs" --out results/mini_e2e --wall_seconds "$wall"
