#!/usr/bin/env bash
# Raw E2E / WebNLG 2017 / DART files -> data/<set>/<split>_formatted.jsonl and data/<set>/<split>.jsonl.
#
# Usage: bash create_datasets.sh [ROOT]
#   ROOT (default: this folder) holds vocab/ and data/. Missing raw files and ./vocab come from
#   $NOLA_DATA_MIRROR when it is set (the network is then never used), otherwise from the URLs in
#   src/nola/sources.json. A split that cannot be had is skipped with a one-line warning; a
#   malformed raw file stops the script with its file and line number. Bad input (a helper's
#   exit status 2) stops it with that status and the helper's one `error:` line.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${1:-$here}"
PY="${PYTHON:-$here/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}"
[ $# -le 1 ] || { echo "error: create_datasets.sh takes at most one argument (ROOT), got $#" >&2; exit 2; }

echo "vocabulary..."  # first: it checks ROOT and the mirror before anything is created
"$PY" -m nola.train.download vocab --root "$root" || {
  status=$?
  [ "$status" -eq 2 ] || echo "error: no GPT-2 vocabulary in $root/vocab, nothing can be encoded" >&2
  exit "$status"
}
cd "$root" || { echo "error: ROOT $root cannot be entered: pass a folder you may enter" >&2; exit 2; }

built=()
skipped=()

# build_split SET SPLIT CONVERTER: fetch the raw split if needed, format it, encode it.
build_split() {
  local set=$1 split=$2 conv=$3 raw dir summary
  echo "$set $split..."
  raw=$("$PY" -m nola.train.download data "$set" "$split" --root .) || {
    status=$?
    [ "$status" -eq 2 ] && exit 2
    skipped+=("$set/$split"); return 0
  }
  dir=$(dirname "$raw")
  "$PY" "$here/src/format_converting_$conv.py" "$raw" "$dir/${split}_formatted.jsonl" || exit $?
  summary=$("$PY" "$here/src/gpt2_encode.py" --vocab vocab --input "$dir/${split}_formatted.jsonl" \
    --output "$dir/$split.jsonl" --add_bos --add_eos) || exit $?
  echo "$summary"
  built+=("$summary")
}

for split in train valid test; do build_split e2e "$split" e2e; done
for split in train valid test; do build_split webnlg "$split" webnlg; done
for split in train valid test; do build_split dart "$split" dart; done

echo
echo "built ${#built[@]} encoded splits under $(pwd)/data:"
for line in "${built[@]}"; do echo "  $line"; done
if [ ${#skipped[@]} -gt 0 ]; then
  echo "skipped (raw file neither present nor obtainable): ${skipped[*]}"
fi
[ ${#built[@]} -gt 0 ]
