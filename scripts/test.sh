#!/usr/bin/env bash
# Run the test suite. `bash scripts/test.sh` is what CI runs; add --slow for the long checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export NOLA_DATA_MIRROR="${NOLA_DATA_MIRROR:-$(cd .. && pwd)/shared}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if [ "${1:-}" = "--slow" ]; then
  shift
  exec "$PY" -m pytest -m slow "$@"
fi
exec "$PY" -m pytest -m "not slow" "$@"
