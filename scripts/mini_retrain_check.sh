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
retrain() {
  local name=$1 dir="$new/runs/$1"
  shift
  mkdir -p "$dir"
  "$PY" -m torch.distributed.launch --nproc_per_node=1 src/gpt2_ft.py --train_data "$e2e/mini_train.jsonl" \
    --valid_data "$e2e/mini_valid.jsonl" --train_batch_size 8 --valid_batch_size 16 --seq_len 96 \
    --model_card "$old/base/card.json" --init_checkpoint "$base" --clip 0.0 --weight_decay 0.0 --correct_bias \
    --adam_beta2 0.999 --scheduler linear --warmup_step 50 --max_step "${ADAPT_STEPS:-600}" --save_interval 100000 \
    --log_interval 100 --eval_interval 100 --label_smooth 0.1 --work_dir "$dir" --overwrite --random_seed 110 "$@" \
    > "$dir/train.log" 2>&1 || { echo "training $name failed: $dir/train.log"; exit 1; }
}
# The flags of mini_reproduction.sh's adapt lines.
retrain lora_r4 --lora_dim 4 --lora_alpha 32 --lora_dropout 0.1 --lr 0.002
retrain lora_r1 --lora_dim 1 --lora_alpha 8 --lora_dropout 0.1 --lr 0.002
retrain nola --nola_rank 8 --nola_c 1.0 --nola_qv --nola_num_basis 100 --lr 0.1
retrain qnola3 --nola_rank 8 --nola_c 1.0 --nola_qv --nola_num_basis 100 --qnola --qbits 3 --lr 0.1
"$PY" scripts/mini_compare.py --old "$old/runs" --new "$new/runs"
"$PY" scripts/mini_report.py --runs "$old/runs" --out results/mini_e2e --wall_seconds "$wall"
