#!/usr/bin/env bash
# Run the test suite. `bash scripts/test.sh` is what CI runs (slow tests excluded);
# `--slow` runs everything, the slow checks included; `--slow-only` runs only the slow checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export NOLA_DATA_MIRROR="${NOLA_DATA_MIRROR:-$(cd .. && pwd)/shared}"
if [ -z "${PYTHON:-}" ] && [ ! -x .venv/bin/python ]; then
  echo "creating .venv and installing requirement.txt (first run only)"
  python3 -m venv .venv && .venv/bin/pip install -q -r requirement.txt
fi
PY="${PYTHON:-.venv/bin/python}"
case "${1:-}" in
  --slow) shift; exec "$PY" -m pytest "$@" ;;
  --slow-only) shift; exec "$PY" -m pytest -m slow "$@" ;;
esac
exec "$PY" -m pytest -m "not slow" "$@"
