# Shared by the scripts/paper/<row>.sh scripts (source it, then `parse_args "$@"` and `run_row ...`):
# preflight, then train -> pick the last model.<step>/ -> beam search -> decode -> score -> one JSON
# row appended to results/<dataset>.jsonl (render with `python scripts/make_table.py`).
#
# Row script options:
#   --nproc_per_node N   processes (= GPUs) per node; also NPROC=N; default: every visible GPU.
#                        The global batch stays the paper's 8 (each process trains on 8/N), so N
#                        must be 1, 2, 4 or 8.
#   --dry-run            check the files, print the commands, run nothing (no GPU needed).
#   --resume             continue an interrupted training run of this row from its resume.pt.
# Environment: PYTHON (default .venv/bin/python), NOLA_RUN_ROOT (holds data/, vocab/ and
#   pretrained_checkpoints/; default the repo), WORK_ROOT (default $NOLA_RUN_ROOT/trained_models),
#   RESULTS_DIR (default <repo>/results), MASTER_PORT (default 29500; set one per concurrent run).
# A failed preflight prints one `error: ...` line, exits 2 and leaves nothing behind; a failed step
# exits 1 naming its log under $WORK_ROOT/<row>/logs/.

PAPER_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$PAPER_REPO/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
RUN_ROOT="${NOLA_RUN_ROOT:-$PAPER_REPO}"
RESULTS="${RESULTS_DIR:-$PAPER_REPO/results}"
GLOBAL_BATCH=8
DRY_RUN=0
RESUME=0
NPROC="${NPROC:-}"

die() { echo "error: $*" >&2; exit 2; }

# parse_args "$@": the row script's own options.
parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --nproc_per_node|--nproc-per-node) [ $# -ge 2 ] || die "$1 needs a number"; NPROC=$2; shift 2 ;;
      --nproc_per_node=*|--nproc-per-node=*) NPROC=${1#*=}; shift ;;
      --dry-run) DRY_RUN=1; shift ;;
      --resume) RESUME=1; shift ;;
      -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
      *) die "unknown option $1 (use --nproc_per_node N, --dry-run, --resume)" ;;
    esac
  done
}

# dataset_settings DATASET: data folder, label smoothing (LoRA paper Table 11), decode/score setup.
# Beam search: 10 beams, length penalty 0.8 on every dataset, as in the microsoft/LoRA and NOLA README
# commands (the LoRA paper's Table 11 lists 0.9 for E2E).
dataset_settings() {
  case "$1" in
    e2e) DATA_DIR=data/e2e; LABEL_SMOOTH=0.1; DECODE_FLAGS=() ;;
    webnlg) DATA_DIR=data/webnlg_challenge_2017; LABEL_SMOOTH=0.1
            DECODE_FLAGS=(--ref_type webnlg --ref_num 6 --tokenize --lower) ;;
    dart) DATA_DIR=data/dart; LABEL_SMOOTH=0.0; DECODE_FLAGS=(--ref_type dart --ref_num 6 --tokenize --lower) ;;
    *) die "dataset '$1' is not one of e2e, webnlg, dart" ;;
  esac
  LENGTH_PENALTY=0.8
}

# multi_ref_scorer: the WebNLG/DART scorer (eval.py -R refprefix -H hyp -nr N -m bleu,meteor,ter).
multi_ref_scorer() {
  if [ -n "${MULTI_REF_SCORER:-}" ]; then echo "$MULTI_REF_SCORER"; return; fi
  find "$PAPER_REPO/eval" -name eval.py -not -path '*/e2e/*' 2>/dev/null | sort | head -n 1
}

# preflight NAME MODEL DATASET: everything checked before any work; exits 2 on the first problem.
preflight() {
  local name=$1 model=$2 dataset=$3 f gpus
  [ -d "$RUN_ROOT" ] || die "NOLA_RUN_ROOT=$RUN_ROOT is not a folder"
  RUN_ROOT=$(cd "$RUN_ROOT" && pwd)
  case $RESULTS in /*) ;; *) RESULTS="$PWD/$RESULTS" ;; esac
  CKPT_FILE="$RUN_ROOT/pretrained_checkpoints/$model-pytorch_model.bin"
  [ -f "$CKPT_FILE" ] || die "pretrained checkpoint $CKPT_FILE is missing: run \`bash download_pretrained_checkpoints.sh $model\`"
  for f in "$DATA_DIR/train.jsonl" "$DATA_DIR/valid.jsonl" "$DATA_DIR/test.jsonl" \
           "$DATA_DIR/test_formatted.jsonl" vocab/encoder.json vocab/vocab.bpe; do
    [ -f "$RUN_ROOT/$f" ] || die "$RUN_ROOT/$f is missing: run \`bash create_datasets.sh\`"
  done
  for f in src/gpt2_ft.py src/gpt2_beam.py src/gpt2_decode.py; do
    [ -f "$PAPER_REPO/$f" ] || die "$PAPER_REPO/$f is missing: this checkout has no $(basename "$f")"
  done
  if [ "$dataset" = e2e ]; then
    SCORER="$PAPER_REPO/eval/e2e/measure_scores.py"
  else
    SCORER=$(multi_ref_scorer)
  fi
  [ -n "$SCORER" ] && [ -f "$SCORER" ] || die "no $dataset scorer under $PAPER_REPO/eval (set MULTI_REF_SCORER=path/to/eval.py)"
  if [ "$dataset" = webnlg ]; then
    grep -q -- '--filter' "$PAPER_REPO/src/gpt2_decode.py" \
      || die "src/gpt2_decode.py has no --filter: the WebNLG seen/unseen scores need it"
  fi
  WORK="${WORK_ROOT:-$RUN_ROOT/trained_models}/$name"
  case $WORK in /*) ;; *) WORK="$PWD/$WORK" ;; esac
  if [ "$RESUME" = 1 ]; then
    [ -f "$WORK/resume.pt" ] || die "--resume: $WORK/resume.pt is missing: there is no interrupted run to continue"
  elif [ "$DRY_RUN" = 0 ] && [ -e "$WORK" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ]; then
    die "$WORK holds an earlier run: continue it with --resume, or move it away (or set WORK_ROOT)"
  fi
  if [ -n "$NPROC" ]; then
    [[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || die "--nproc_per_node '$NPROC' is not a positive integer"
  fi
  if [ "$DRY_RUN" = 1 ]; then
    NPROC=${NPROC:-1}
  else
    gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null) \
      || die "$PY cannot import torch: build the venv (pip install -r requirement.txt) or set PYTHON"
    [ "$gpus" -ge 1 ] || die "no CUDA GPU visible to $PY (torch.cuda.device_count() = 0): the paper rows need a GPU (--dry-run prints the commands without one)"
    NPROC=${NPROC:-$gpus}
    [ "$NPROC" -le "$gpus" ] || die "--nproc_per_node $NPROC but only $gpus GPU(s) visible"
  fi
  [ $((GLOBAL_BATCH % NPROC)) -eq 0 ] || die "--nproc_per_node $NPROC does not divide the paper's batch of $GLOBAL_BATCH: use 1, 2, 4 or 8"
}

# shell_quote ARGS...: the arguments as one copy-pasteable command line.
shell_quote() {
  local arg line=""
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./=:,@%+-]+$ ]]; then line+="$arg "; else line+="$(printf '%q' "$arg") "; fi
  done
  echo "${line% }"
}

# step LABEL OUT CMD...: record CMD; run it (stdout to OUT, stderr appended to logs/LABEL.log, or both
# to the log when OUT is "-"), or only print it under --dry-run; stop with the log's name on failure.
step() {
  local label=$1 out=$2 log rc
  shift 2
  log="$WORK/logs/$label.log"
  COMMANDS+=("$(shell_quote "$@")")
  if [ "$DRY_RUN" = 1 ]; then
    shell_quote "$@"
    return 0
  fi
  echo "== [$(date -u +%H:%M:%S)] $label (log: $log)"
  if [ "$out" = - ]; then
    "$@" >> "$log" 2>&1; rc=$?
  else
    "$@" > "$out" 2>> "$log"; rc=$?
  fi
  [ $rc -eq 0 ] || { echo "error: $label failed (exit $rc): see $log" >&2; exit 1; }
}

# last_checkpoint: the highest-step save in $WORK: the adapter folder model.<step>/ (model.<step>.pt: --save_full).
last_checkpoint() {
  local base
  base=$(ls "$WORK" 2>/dev/null | grep -E '^model\.[0-9]+(\.pt)?$' | sort -t. -k2 -n | tail -n 1)
  [ -n "$base" ] || { echo "error: training left no model.<step>/ in $WORK: see $WORK/logs/train.log" >&2; exit 1; }
  echo "$WORK/$base"
}

# run_row NAME MODEL_CARD MODEL DATASET TRAIN_FLAGS...: one paper row end to end.
#   MODEL_CARD: gpt2.md | gpt2.lg; MODEL: gpt2-medium | gpt2-large (names the pretrained file);
#   TRAIN_FLAGS: the row's own gpt2_ft.py flags (learning rate, adapter), after the shared ones.
run_row() {
  local name=$1 card=$2 model=$3 dataset=$4 ckpt step_no predict launch scorer_json part filter
  shift 4
  dataset_settings "$dataset"
  preflight "$name" "$model" "$dataset"
  COMMANDS=()
  cd "$RUN_ROOT" || die "cannot enter $RUN_ROOT"
  [ "$DRY_RUN" = 1 ] || mkdir -p "$WORK/logs"
  RESUME_FLAGS=()
  [ "$RESUME" = 1 ] && RESUME_FLAGS=(--resume "$WORK")
  launch=("$PY" -m torch.distributed.launch --nproc_per_node="$NPROC" --master_port="${MASTER_PORT:-29500}")

  step train - "${launch[@]}" "$PAPER_REPO/src/gpt2_ft.py" \
    --train_data "$DATA_DIR/train.jsonl" --valid_data "$DATA_DIR/valid.jsonl" \
    --train_batch_size $((GLOBAL_BATCH / NPROC)) --grad_acc 1 --valid_batch_size 4 --seq_len 512 \
    --model_card "$card" --init_checkpoint "$CKPT_FILE" --platform local \
    --clip 0.0 --correct_bias --adam_beta2 0.999 --scheduler linear --warmup_step 500 --max_epoch 5 \
    --save_interval 1000 --label_smooth "$LABEL_SMOOTH" --work_dir "$WORK" --random_seed 110 "$@" \
    ${RESUME_FLAGS[@]+"${RESUME_FLAGS[@]}"}

  if [ "$DRY_RUN" = 1 ]; then ckpt="$WORK/model.<STEP>"; else ckpt=$(last_checkpoint) || exit 1; fi
  step_no=$(basename "$ckpt" .pt); step_no=${step_no#model.}
  predict="predict.$step_no.b10p08r4.jsonl"
  step beam - "${launch[@]}" "$PAPER_REPO/src/gpt2_beam.py" \
    --data "$DATA_DIR/test.jsonl" --batch_size 1 --seq_len 512 --eval_len 64 \
    --model_card "$card" --init_checkpoint "$ckpt" --platform local \
    --beam 10 --length_penalty "$LENGTH_PENALTY" --no_repeat_ngram_size 4 --repetition_penalty 1.0 \
    --eos_token_id 628 --work_dir "$WORK" --output_file "$predict"

  SCORE_ARGS=()
  if [ "$dataset" = e2e ]; then
    step decode - "$PY" "$PAPER_REPO/src/gpt2_decode.py" --vocab vocab --sample_file "$WORK/$predict" \
      --input_file "$DATA_DIR/test_formatted.jsonl" \
      --output_ref_file "$WORK/e2e_ref.txt" --output_pred_file "$WORK/e2e_pred.txt"
    step score "$WORK/scores.json" "$PY" "$SCORER" "$WORK/e2e_ref.txt" "$WORK/e2e_pred.txt" -p --json
    SCORE_ARGS=("$WORK/scores.json")
  else
    scorer_json=()
    grep -q -- '--json' "$SCORER" && scorer_json=(--json)
    for part in A S U; do
      [ "$dataset" = dart ] && [ "$part" != A ] && continue
      case $part in A) filter=() ;; S) filter=(--filter seen) ;; U) filter=(--filter unseen) ;; esac
      step "decode_$part" - "$PY" "$PAPER_REPO/src/gpt2_decode.py" --vocab vocab --sample_file "$WORK/$predict" \
        --input_file "$DATA_DIR/test_formatted.jsonl" "${DECODE_FLAGS[@]}" "${filter[@]}" \
        --output_ref_file "$WORK/references_$part" --output_pred_file "$WORK/hypothesis_$part"
      step "score_$part" "$WORK/scores_$part.txt" "$PY" "$SCORER" -R "$WORK/references_$part/reference" \
        -H "$WORK/hypothesis_$part" -nr 6 -m bleu,meteor,ter "${scorer_json[@]}"
      if [ "$dataset" = dart ]; then SCORE_ARGS=("$WORK/scores_A.txt"); else SCORE_ARGS+=("$part=$WORK/scores_$part.txt"); fi
    done
  fi

  if [ "$DRY_RUN" = 1 ]; then
    echo "# dry run: nothing was run; a real run appends its row to $RESULTS/$dataset.jsonl"
    return 0
  fi
  printf '%s\n' "${COMMANDS[@]}" > "$WORK/commands.txt"
  "$PY" "$PAPER_REPO/scripts/paper/record_row.py" --name "$name" --model "$card" --dataset "$dataset" \
    --checkpoint "$ckpt" --train_log "$WORK/logs/train.log" --scores "${SCORE_ARGS[@]}" \
    --commands "$WORK/commands.txt" --nproc "$NPROC" --results_dir "$RESULTS" \
    || { echo "error: recording the row failed; the scores are in $WORK" >&2; exit 1; }
}
