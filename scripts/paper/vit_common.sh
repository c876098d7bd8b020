# Shared by the scripts/paper/vit_<model>_<method>.sh rows (source it, then `vit_parse_args "$@"` and
# `run_vit_row NAME ARCH FLAGS...`): UCDvision/NOLA vit/run.sh's protocol. For every dataset and shot
# count, 4 k-shot sampling seeds (--kshot_seed 0..3) x 3 runs (--seed 0..2) of src/vit_ft.py, each
# evaluated on the whole val/ folder after the last epoch; then one row per (dataset, shots) with the
# accuracy's mean (std) over the 12 runs, appended to results/<dataset>.jsonl
# (render with `python scripts/make_table.py`).
#
# Row script options:
#   --dataset D    cifar100, cub200 or caltech101 (repeatable; default all three)
#   --shots K      5 or 10 (repeatable; default both)
#   --dry-run      print the commands, check and run nothing (no GPU, timm or data needed).
#   --resume       continue the row: finished runs (result.json) are kept, interrupted ones resumed
#                  from their resume.pt, missing ones started.
# Environment: PYTHON (default .venv/bin/python, with requirements-vit.txt installed), NOLA_RUN_ROOT
#   (holds data/vit/<dataset>/{train,val} from scripts/vit/download_data.sh; default the repo),
#   WORK_ROOT (default $NOLA_RUN_ROOT/trained_models), RESULTS_DIR (default <repo>/results).
# A failed preflight prints one `error: ...` line and exits 2; a failed run exits 1 naming its log.

# die, shell_quote and the paths come from the GPT-2 rows' common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
VIT_DATASETS=()
VIT_SHOTS=()
KSHOT_SEEDS=(0 1 2 3)
RUN_SEEDS=(0 1 2)

vit_parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --dataset) [ $# -ge 2 ] || die "$1 needs a name"; VIT_DATASETS+=("$2"); shift 2 ;;
      --shots) [ $# -ge 2 ] || die "$1 needs a number"; VIT_SHOTS+=("$2"); shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      --resume) RESUME=1; shift ;;
      -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
      *) die "unknown option $1 (use --dataset D, --shots K, --dry-run, --resume)" ;;
    esac
  done
  [ ${#VIT_DATASETS[@]} -gt 0 ] || VIT_DATASETS=(cifar100 cub200 caltech101)
  [ ${#VIT_SHOTS[@]} -gt 0 ] || VIT_SHOTS=(5 10)
  local d k
  for d in "${VIT_DATASETS[@]}"; do
    case $d in cifar100|cub200|caltech101) ;; *) die "--dataset '$d' is not one of cifar100, cub200, caltech101" ;; esac
  done
  for k in "${VIT_SHOTS[@]}"; do
    [[ "$k" =~ ^[1-9][0-9]*$ ]] || die "--shots '$k' is not a positive integer"
  done
}

# vit_preflight NAME TIMM_NAME: CUDA, timm with the cached weights, the data, the work folder.
vit_preflight() {
  local name=$1 timm_name=$2 d gpus
  [ -d "$RUN_ROOT" ] || die "NOLA_RUN_ROOT=$RUN_ROOT is not a folder"
  RUN_ROOT=$(cd "$RUN_ROOT" && pwd)
  case $RESULTS in /*) ;; *) RESULTS="$PWD/$RESULTS" ;; esac
  WORK="${WORK_ROOT:-$RUN_ROOT/trained_models}/$name"
  case $WORK in /*) ;; *) WORK="$PWD/$WORK" ;; esac
  [ "$DRY_RUN" = 1 ] && return 0
  gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null) \
    || die "$PY cannot import torch: build the venv (pip install -r requirement.txt -r requirements-vit.txt) or set PYTHON"
  [ "$gpus" -ge 1 ] || die "no CUDA GPU visible to $PY: the ViT rows need one (--dry-run prints the commands without)"
  "$PY" -c 'import timm' >/dev/null 2>&1 || die "$PY cannot import timm: pip install -r requirements-vit.txt"
  HF_HUB_OFFLINE=1 "$PY" -c "import timm; timm.create_model('$timm_name', pretrained=True)" >/dev/null 2>&1 \
    || die "the pre-trained weights of $timm_name are not in the Hugging Face cache: run \`$PY -c \"import timm; timm.create_model('$timm_name', pretrained=True)\"\` once with a connection"
  for d in "${VIT_DATASETS[@]}"; do
    [ -d "$RUN_ROOT/data/vit/$d/train" ] && [ -d "$RUN_ROOT/data/vit/$d/val" ] \
      || die "$RUN_ROOT/data/vit/$d/{train,val} is missing: run \`bash scripts/vit/download_data.sh $d\`"
  done
  if [ "$RESUME" = 0 ] && [ -e "$WORK" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ]; then
    die "$WORK holds an earlier run: continue it with --resume, or move it away (or set WORK_ROOT)"
  fi
}

# run_vit_row NAME ARCH FLAGS...: ARCH base | large; FLAGS: the row's own vit_ft.py flags.
run_vit_row() {
  local name=$1 arch=$2 timm_name dataset shots cell seed run out log resume commands
  shift 2
  case $arch in base) timm_name=vit_base_patch16_224 ;; large) timm_name=vit_large_patch16_224 ;;
    *) die "run_vit_row: unknown arch $arch" ;; esac
  vit_preflight "$name" "$timm_name"
  cd "$RUN_ROOT" || die "cannot enter $RUN_ROOT"
  for dataset in "${VIT_DATASETS[@]}"; do
    for shots in "${VIT_SHOTS[@]}"; do
      cell="$WORK/${dataset}_${shots}shot"
      local runs=() lines=()
      for run in "${RUN_SEEDS[@]}"; do
        for seed in "${KSHOT_SEEDS[@]}"; do
          out="$cell/v$seed/run$run"
          runs+=("$out")
          resume=(--outdir "$out")
          if [ "$DRY_RUN" = 0 ] && [ -f "$out/result.json" ]; then echo "# done: $out"; continue; fi
          [ "$DRY_RUN" = 0 ] && [ -f "$out/resume.pt" ] && resume=(--resume "$out")
          local cmd=("$PY" "$PAPER_REPO/src/vit_ft.py" --train_data_path "data/vit/$dataset" --vit "$arch"
                     --kshot "$shots" --kshot_seed "$seed" --seed "$run" --batch_size 16 --epochs 50
                     --fp16 --num_workers 4 "$@" "${resume[@]}")
          lines+=("$(shell_quote "${cmd[@]}")")
          if [ "$DRY_RUN" = 1 ]; then shell_quote "${cmd[@]}"; continue; fi
          mkdir -p "$cell/logs"
          log="$cell/logs/v${seed}_run${run}.log"
          echo "== [$(date -u +%H:%M:%S)] $dataset ${shots}-shot, sampling seed $seed, run $run (log: $log)"
          "${cmd[@]}" >> "$log" 2>&1 || { echo "error: $out failed: see $log" >&2; exit 1; }
        done
      done
      local record=("$PY" "$PAPER_REPO/scripts/paper/vit_record.py" --name "${name}_${dataset}_${shots}shot"
                    --model "vit-${arch:0:1}" --dataset "$dataset" --commands "$cell/commands.txt"
                    --results_dir "$RESULTS" --runs "${runs[@]}")
      if [ "$DRY_RUN" = 1 ]; then shell_quote "${record[@]}"; continue; fi
      printf '%s\n' ${lines[@]+"${lines[@]}"} > "$cell/commands.txt"
      "${record[@]}" || { echo "error: recording ${name}_${dataset}_${shots}shot failed; the runs are in $cell" >&2; exit 1; }
    done
  done
  [ "$DRY_RUN" = 1 ] && echo "# dry run: nothing was run; a real run appends one row per dataset and shot count to $RESULTS/<dataset>.jsonl"
  return 0
}
