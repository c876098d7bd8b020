#!/usr/bin/env bash
# Optional: fetch and install the official scorers the paper used, to cross-check the built-in ones.
# Nothing else needs this: eval/e2e/measure_scores.py and eval/eval.py work offline as they are.
#
#   bash eval/download_evalscript.sh        # clones into eval/official/ (git-ignored)
#
# Then, as in the paper's pipeline (Python 3 with Java and Perl installed):
#   python eval/official/e2e-metrics/measure_scores.py e2e_ref.txt e2e_pred.txt -p
#   cd eval/official/GenerationEval && python eval.py -R ../../../refs/reference -H ../../../hyp -nr 6 -m bleu,meteor,ter
# Environment: PIP (default "pip"), EVAL_OFFICIAL_DIR (default eval/official),
# E2E_METRICS_URL and GENERATION_EVAL_URL (the upstream repositories).
set -euo pipefail
cd "$(dirname "$0")"
PIP=${PIP:-pip}
DEST=${EVAL_OFFICIAL_DIR:-official}
E2E_METRICS_URL=${E2E_METRICS_URL:-https://github.com/tuetschek/e2e-metrics}
GENERATION_EVAL_URL=${GENERATION_EVAL_URL:-https://github.com/WebNLG/GenerationEval.git}
command -v git >/dev/null || { echo "error: git is not installed: install it, or use the built-in scorers" >&2; exit 2; }
mkdir -p "$DEST"
cd "$DEST"

echo "downloading e2e-metrics..."
[ -d e2e-metrics ] || git clone --quiet "$E2E_METRICS_URL" e2e-metrics
$PIP install -r e2e-metrics/requirements.txt

echo "downloading GenerationEval for webnlg and dart..."
[ -d GenerationEval ] || git clone --quiet "$GENERATION_EVAL_URL" GenerationEval
(cd GenerationEval && bash ./install_dependencies.sh)

echo "official scorers are in $(pwd)"
