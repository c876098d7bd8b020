# Shared by the scripts/paper/alpaca_llama2_<size>_<adapter>.sh rows (source it, then `parse_args "$@"`
# and `run_llama_row NAME SIZE FLAGS...`): preflight, then llama_ft.py on Alpaca -> eval/mmlu.py
# (5-shot, test split) on the adapter -> $WORK/mmlu_results.json.
#
# Row script options:
#   --dry-run            print the commands, check and run nothing (no GPU or weights needed).
#   --resume             continue this row's interrupted training from its resume.pt.
#   --nproc_per_node N   processes (= GPUs) under torch.distributed.launch; the global batch stays the
#                        official one (gradient accumulation is divided by N, which must divide it).
# Environment: PYTHON (default .venv/bin/python), NOLA_RUN_ROOT (holds data/alpaca and data/mmlu from
#   scripts/llama/download_data.sh; default the repo), LLAMA_MODELS (folder holding Llama-2-7b-hf,
#   Llama-2-13b-hf, Llama-2-70b-hf as downloaded from the Hugging Face hub; default
#   $NOLA_RUN_ROOT/pretrained_checkpoints), WORK_ROOT (default $NOLA_RUN_ROOT/trained_models),
#   MASTER_PORT (default 29500).
# A failed preflight prints one `error: ...` line and exits 2; a failed step exits 1 naming its log.

# die, parse_args (--dry-run, --resume, --nproc_per_node) and the paths come from the GPT-2 rows' common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
LLAMA_REPO=$PAPER_REPO

# llama_preflight NAME SIZE: CUDA, the weights and the data, before any work (skipped by --dry-run).
llama_preflight() {
  local name=$1 size=$2 gpus
  NPROC=${NPROC:-1}
  [[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || die "--nproc_per_node '$NPROC' is not a positive integer"
  [ -d "$RUN_ROOT" ] || die "NOLA_RUN_ROOT=$RUN_ROOT is not a folder"
  RUN_ROOT=$(cd "$RUN_ROOT" && pwd)
  MODEL_DIR="${LLAMA_MODELS:-$RUN_ROOT/pretrained_checkpoints}/Llama-2-${size,,}-hf"
  WORK="${WORK_ROOT:-$RUN_ROOT/trained_models}/$name"
  [ "$DRY_RUN" = 1 ] && return 0
  gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null) \
    || die "$PY cannot import torch: build the venv (pip install -r requirement.txt) or set PYTHON"
  [ "$gpus" -ge 1 ] || die "no CUDA GPU visible to $PY: the LLaMA-2 rows need one (--dry-run prints the commands without)"
  [ "$NPROC" -le "$gpus" ] || die "--nproc_per_node $NPROC but only $gpus GPU(s) visible"
  [ -f "$MODEL_DIR/config.json" ] && ls "$MODEL_DIR"/*.safetensors "$MODEL_DIR"/*.bin >/dev/null 2>&1 \
    || die "no LLaMA-2 ${size} weights in $MODEL_DIR (config.json + *.safetensors): download meta-llama/Llama-2-${size,,}-hf there or set LLAMA_MODELS"
  [ -f "$RUN_ROOT/data/alpaca/alpaca_data.json" ] || die "$RUN_ROOT/data/alpaca/alpaca_data.json is missing: run \`bash scripts/llama/download_data.sh\`"
  [ -d "$RUN_ROOT/data/mmlu/test" ] || die "$RUN_ROOT/data/mmlu/test is missing: run \`bash scripts/llama/download_data.sh\`"
  if [ "$RESUME" = 1 ]; then
    [ -f "$WORK/resume.pt" ] || die "--resume: $WORK/resume.pt is missing: there is no interrupted run to continue"
  elif [ -e "$WORK" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ]; then
    die "$WORK holds an earlier run: continue it with --resume, or move it away (or set WORK_ROOT)"
  fi
}

# llama_step LABEL CMD...: print it under --dry-run, else run it with its output in $WORK/logs/LABEL.log.
llama_step() {
  local label=$1 log
  shift
  if [ "$DRY_RUN" = 1 ]; then shell_quote "$@"; return 0; fi
  log="$WORK/logs/$label.log"
  echo "== [$(date -u +%H:%M:%S)] $label (log: $log)"
  "$@" >> "$log" 2>&1 || { echo "error: $label failed: see $log" >&2; exit 1; }
}

# run_llama_row NAME SIZE BITS BATCH ACCUMULATION FLAGS...: one row of the paper's LLaMA-2 table; the
# base is loaded with --bits BITS --bf16 for training and for MMLU.
run_llama_row() {
  local name=$1 size=$2 bits=$3 batch=$4 acc=$5 launch
  shift 5
  llama_preflight "$name" "$size"
  [ $((acc % NPROC)) -eq 0 ] || die "--nproc_per_node $NPROC does not divide the gradient accumulation $acc"
  cd "$RUN_ROOT" || die "cannot enter $RUN_ROOT"
  [ "$DRY_RUN" = 1 ] || mkdir -p "$WORK/logs"
  local resume=()
  [ "$RESUME" = 1 ] && resume=(--resume "$WORK")
  launch=("$PY")
  [ "$NPROC" -gt 1 ] && launch=("$PY" -m torch.distributed.launch --nproc_per_node="$NPROC" --master_port="${MASTER_PORT:-29500}")
  llama_step train "${launch[@]}" "$LLAMA_REPO/src/llama_ft.py" --model_name_or_path "$MODEL_DIR" \
    --bits "$bits" --bf16 --dataset alpaca --source_max_len 384 --target_max_len 512 \
    --per_device_train_batch_size "$batch" --gradient_accumulation_steps $((acc / NPROC)) --max_steps 200 \
    --lr_scheduler_type constant --adam_beta2 0.999 --max_grad_norm 0.9 --weight_decay 0.0 --seed 0 \
    --gradient_checkpointing --logging_steps 5 --save_steps 50 --output_dir "$WORK" "$@" \
    ${resume[@]+"${resume[@]}"}
  llama_step mmlu "$PY" "$LLAMA_REPO/eval/mmlu.py" --model_name_or_path "$MODEL_DIR" --bits "$bits" --bf16 \
    --adapter "$WORK" --data_dir data/mmlu --split test --shots 5 --output "$WORK/mmlu_results.json"
  if [ "$DRY_RUN" = 1 ]; then
    echo "# dry run: nothing was run; a real run writes $WORK/mmlu_results.json"
  else
    echo "MMLU 5-shot: $WORK/mmlu_results.json"
  fi
}
