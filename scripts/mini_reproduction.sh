#!/usr/bin/env bash
# A miniature of the paper's GPT-2 table that runs on a CPU:
#  (a) pre-train a small GPT-2 (4 layers x 128 dims, real GPT-2 vocabulary) on the DART and WebNLG
#      dev texts of the mirror (full fine-tuning with gpt2_ft.py, no adapter);
#  (b) adapt it to E2E (train on the E2E valid split, 500 MRs; validation loss on its last 47 MRs)
#      with: no adaptation, LoRA r=4, LoRA r=1, NOLA r=8 with fewer parameters than LoRA r=1, and
#      3-bit quantised NOLA; decode the 630 E2E test MRs (beam 10) and score with the official metrics;
#  (c) write results/mini_e2e.md (+ .json) and results/mini_e2e.png (validation loss vs step).
# Usage: bash scripts/mini_reproduction.sh   (work files under ./mini_run or $MINI_DIR; about 1 h on 2 cores)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
out="${MINI_DIR:-$repo/mini_run}"
if [ -z "${NOLA_DATA_MIRROR:-}" ] && [ -d "$repo/../shared/data" ]; then
  NOLA_DATA_MIRROR=$(cd "$repo/../shared" && pwd)
  export NOLA_DATA_MIRROR
fi
PY="${PYTHON:-$repo/.venv/bin/python}"
export PYTHON="$PY"
launch=("$PY" -m torch.distributed.launch --nproc_per_node=1)
source scripts/mini_runs.sh
mkdir -p "$out/logs"
start=$SECONDS
say() { echo "== [$((SECONDS - start)) s] $*"; }

say "datasets"
bash create_datasets.sh "$out" > "$out/logs/datasets.log" 2>&1 || { echo "datasets failed: $out/logs/datasets.log"; exit 1; }
data="$out/data"
cat "$data/webnlg_challenge_2017/valid.jsonl" "$data/dart/valid.jsonl" > "$out/pretrain_all.jsonl"
head -n -400 "$out/pretrain_all.jsonl" > "$out/pretrain_train.jsonl"
tail -n 400 "$out/pretrain_all.jsonl" > "$out/pretrain_valid.jsonl"
e2e="$data/e2e"
"$PY" scripts/subset.py --formatted "$e2e/valid_formatted.jsonl" --encoded "$e2e/valid.jsonl" --contexts 500 --out "$e2e/mini_train"
"$PY" scripts/subset.py --formatted "$e2e/valid_formatted.jsonl" --encoded "$e2e/valid.jsonl" --skip 500 --contexts 47 --out "$e2e/mini_valid"

say "(a) pre-training the small GPT-2 on DART + WebNLG dev"
"$PY" scripts/make_tiny_gpt2.py --out "$out/base" --n_embd 128 --n_layer 4 --n_head 4 --n_positions 256 --seed 0 > /dev/null
card="$out/base/card.json"
if [ ! -f "$out/pretrain/done" ]; then
  rm -rf "$out/pretrain"
  "${launch[@]}" src/gpt2_ft.py --train_data "$out/pretrain_train.jsonl" --valid_data "$out/pretrain_valid.jsonl" \
    --train_batch_size 16 --valid_batch_size 16 --seq_len 96 --model_card "$card" \
    --init_checkpoint "$out/base/pytorch_model.bin" --lr 0.001 --weight_decay 0.01 --warmup_step 100 \
    --scheduler linear --max_step "${PRETRAIN_STEPS:-1200}" --save_interval 100000 --log_interval 100 --eval_interval 1000 \
    --work_dir "$out/pretrain" --random_seed 1 > "$out/logs/pretrain.log" 2>&1 || { echo "pre-training failed: $out/logs/pretrain.log"; exit 1; }
  touch "$out/pretrain/done"
fi
base=$(ls "$out"/pretrain/model.*.pt | sort -t. -k2 -n | tail -n 1)

# adapt NAME FLAGS...: fine-tune on E2E (unless NAME is "none"), beam-search the test MRs, decode, score.
adapt() {
  local name=$1 dir="$out/runs/$1" ckpt
  shift
  say "(b) $name"
  mkdir -p "$dir"
  local t0=$SECONDS
  if [ "$name" = none ]; then
    ckpt="$base"
  else
    mini_train "$dir" "$base" "$e2e" "$card" "$@" || { echo "training $name failed: $dir/train.log"; exit 1; }
    ckpt="$dir/$(ls "$dir" | grep -E '^model\.[0-9]+$' | sort -t. -k2 -n | tail -n 1)"  # the last adapter folder
  fi
  echo $((SECONDS - t0)) > "$dir/train_seconds.txt"
  "${launch[@]}" src/gpt2_beam.py --data "$e2e/test.jsonl" --batch_size 16 --seq_len 128 --eval_len 64 \
    --model_card "$card" --init_checkpoint "$ckpt" --beam 10 --length_penalty 0.8 --no_repeat_ngram_size 4 \
    --repetition_penalty 1.0 --eos_token_id 628 --work_dir "$dir" --output_file predict.jsonl > "$dir/beam.log" 2>&1 \
    || { echo "beam $name failed: $dir/beam.log"; exit 1; }
  "$PY" src/gpt2_decode.py --vocab "$out/vocab" --sample_file "$dir/predict.jsonl" --input_file "$e2e/test_formatted.jsonl" \
    --output_ref_file "$dir/e2e_ref.txt" --output_pred_file "$dir/e2e_pred.txt" > "$dir/decode.log" 2>&1 \
    || { echo "decode $name failed: $dir/decode.log"; exit 1; }
  "$PY" eval/e2e/measure_scores.py "$dir/e2e_ref.txt" "$dir/e2e_pred.txt" -p --json > "$dir/scores.json" 2> "$dir/score.log" \
    || { echo "scoring $name failed: $dir/score.log"; exit 1; }
  echo "$ckpt" > "$dir/checkpoint.txt"
}

adapt none
mini_adapted adapt

say "(c) report"
"$PY" scripts/mini_report.py --runs "$out/runs" --out results/mini_e2e --wall_seconds $((SECONDS - start))
say "done"
