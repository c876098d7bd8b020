#!/usr/bin/env bash
# The whole paper pipeline in miniature, on CPU, in a few minutes: E2E data from the mirror (or the
# network) -> a tiny random GPT-2 made with transformers -> NOLA fine-tuning under
# torch.distributed.launch -> beam search -> decoding -> the official E2E metrics.
# Usage: bash scripts/demo.sh        (outputs under ./demo_run, or $DEMO_DIR; about 2 min on 2 cores)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
repo=$(pwd)
out="${DEMO_DIR:-$repo/demo_run}"
if [ -z "${NOLA_DATA_MIRROR:-}" ] && [ -d "$repo/../shared/data" ]; then
  NOLA_DATA_MIRROR=$(cd "$repo/../shared" && pwd)
  export NOLA_DATA_MIRROR
fi
if [ ! -x .venv/bin/python ]; then
  echo "== [setup] creating .venv and installing requirement.txt"
  python3 -m venv .venv && .venv/bin/pip install -q -r requirement.txt || { echo "demo failed at setup (pip)"; exit 1; }
fi
PY="$repo/.venv/bin/python"
export PYTHON="$PY"
rm -rf "$out/model" && mkdir -p "$out/logs"
total=7
n=0
start=$SECONDS

# stage NAME CMD...: run one stage, show its output, keep it in a log, stop with the log's name on failure.
stage() {
  local name=$1 log
  shift
  n=$((n + 1))
  log="$out/logs/$n-$name.log"
  echo "== [$n/$total] $name   (log: $log)"
  if ! "$@" 2>&1 | tee "$log"; then
    echo "demo failed at stage '$name' after $((SECONDS - start)) s: see $log" >&2
    exit 1
  fi
}

e2e="$out/data/e2e"
stage datasets bash create_datasets.sh "$out"
stage subsets bash -c "
  '$PY' scripts/subset.py --formatted '$e2e/valid_formatted.jsonl' --encoded '$e2e/valid.jsonl' --contexts 400 --out '$e2e/train_tiny' &&
  '$PY' scripts/subset.py --formatted '$e2e/valid_formatted.jsonl' --encoded '$e2e/valid.jsonl' --skip 400 --contexts 40 --out '$e2e/valid_tiny' &&
  '$PY' scripts/subset.py --formatted '$e2e/test_formatted.jsonl' --encoded '$e2e/test.jsonl' --contexts 30 --out '$e2e/test_tiny'"
stage base_model "$PY" scripts/make_tiny_gpt2.py --out "$out/base" --n_embd 64 --n_layer 2 --n_head 2
stage train "$PY" -m torch.distributed.launch --nproc_per_node=1 src/gpt2_ft.py \
  --train_data "$e2e/train_tiny.jsonl" --valid_data "$e2e/valid_tiny.jsonl" \
  --train_batch_size 8 --grad_acc 1 --valid_batch_size 8 --seq_len 96 \
  --model_card "$out/base/card.json" --init_checkpoint "$out/base/pytorch_model.bin" \
  --platform local --clip 0.0 --lr 0.1 --weight_decay 0.0 --correct_bias --adam_beta2 0.999 \
  --scheduler linear --warmup_step 20 --max_step 240 --save_interval 1000 --log_interval 40 --eval_interval 120 \
  --nola_rank 8 --nola_c 1.0 --nola_qv --nola_num_basis 256 --label_smooth 0.1 \
  --work_dir "$out/model" --random_seed 110
ckpt=$(ls "$out"/model/model.*.pt 2>/dev/null | sort -t. -k2 -n | tail -n 1)
[ -n "$ckpt" ] || { echo "demo failed at stage 'train': no model.<step>.pt in $out/model" >&2; exit 1; }
stage beam "$PY" -m torch.distributed.launch --nproc_per_node=1 src/gpt2_beam.py \
  --data "$e2e/test_tiny.jsonl" --batch_size 8 --seq_len 96 --eval_len 32 \
  --model_card "$out/base/card.json" --init_checkpoint "$ckpt" --platform local \
  --beam 10 --length_penalty 0.8 --no_repeat_ngram_size 4 --repetition_penalty 1.0 --eos_token_id 628 \
  --work_dir "$out/model" --output_file predict.jsonl
stage decode "$PY" src/gpt2_decode.py --vocab "$out/vocab" --sample_file "$out/model/predict.jsonl" \
  --input_file "$e2e/test_tiny_formatted.jsonl" --output_ref_file "$out/e2e_ref.txt" --output_pred_file "$out/e2e_pred.txt"
stage score "$PY" eval/e2e/measure_scores.py "$out/e2e_ref.txt" "$out/e2e_pred.txt" -p

echo
echo "== demo finished in $((SECONDS - start)) s"
grep -h "trainable parameters" "$out/logs/"*-train.log | tail -n 1 | sed 's/^.*| //'
echo "adapter file: $ckpt ($(stat -c %s "$ckpt") bytes)"
sed -n '/SCORES/,$p' "$out/logs/$total-score.log"
echo "(a random 2-layer base model: the scores show that the chain works, not quality;"
echo " see results/mini_e2e.md for a measured miniature reproduction)"
