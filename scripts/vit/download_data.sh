#!/usr/bin/env bash
# The k-shot data sets of the ViT rows in the ImageFolder layout: data/vit/<name>/{train,val}/<class>/.
#
# Usage: bash scripts/vit/download_data.sh [--root DIR] [cifar10] [cifar100] [cub200] [caltech101]
#   --root DIR (default: the repository) receives data/vit/. With $NOLA_DATA_MIRROR set the archives are
#   copied from the mirror (same layout: data/vit/archives/<archive>) and the network is never used;
#   otherwise they come from the URLs in src/nola/sources.json. Each archive is checked against its
#   pinned MD5 (src/nola/vit/datasets.py) before it is converted. Default: all four.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$here/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" -m nola.vit.datasets --root "$here" "$@"   # a --root given here comes later and wins
