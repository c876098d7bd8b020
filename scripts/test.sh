#!/usr/bin/env bash
# Run the test suite. `bash scripts/test.sh` is what CI runs; add --slow for the long checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export NOLA_DATA_MIRROR="${NOLA_DATA_MIRROR:-$(cd .. && pwd)/shared}"
if [ -z "${PYTHON:-}" ] && [ ! -x .venv/bin/python ]; then
  echo "creating .venv and installing requirement.txt (first run only)"
  python3 -m venv .venv && .venv/bin/pip install -q -r requirement.txt
fi
PY="${PYTHON:-.venv/bin/python}"
if [ "${1:-}" = "--slow" ]; then
  shift
  exec "$PY" -m pytest -m slow "$@"
fi
exec "$PY" -m pytest -m "not slow" "$@"
