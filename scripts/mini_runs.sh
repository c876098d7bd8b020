# The miniature reproduction's adapted runs, sourced by mini_reproduction.sh (train, decode, score) and
# mini_retrain_check.sh (train again, compare), so both train with the same flags. The caller sets PY.

# mini_train DIR BASE E2E CARD FLAGS...: fine-tune the pre-trained BASE on E2E's mini split into DIR
# (log: DIR/train.log); FLAGS choose the adapter.
mini_train() {
  local dir=$1 base=$2 e2e=$3 card=$4
  shift 4
  "$PY" -m torch.distributed.launch --nproc_per_node=1 src/gpt2_ft.py --train_data "$e2e/mini_train.jsonl" \
    --valid_data "$e2e/mini_valid.jsonl" --train_batch_size 8 --valid_batch_size 16 --seq_len 96 \
    --model_card "$card" --init_checkpoint "$base" --clip 0.0 --weight_decay 0.0 --correct_bias \
    --adam_beta2 0.999 --scheduler linear --warmup_step 50 --max_step "${ADAPT_STEPS:-600}" --save_interval 100000 \
    --log_interval 100 --eval_interval 100 --label_smooth 0.1 --work_dir "$dir" --overwrite --random_seed 110 "$@" \
    > "$dir/train.log" 2>&1
}

# mini_adapted EACH: run "EACH NAME FLAGS..." for every adapted run of the table, in its order.
mini_adapted() {
  "$1" lora_r4 --lora_dim 4 --lora_alpha 32 --lora_dropout 0.1 --lr 0.002
  "$1" lora_r1 --lora_dim 1 --lora_alpha 8 --lora_dropout 0.1 --lr 0.002
  "$1" nola --nola_rank 8 --nola_c 1.0 --nola_qv --nola_num_basis 100 --lr 0.1
  "$1" qnola3 --nola_rank 8 --nola_c 1.0 --nola_qv --nola_num_basis 100 --qnola --qbits 3 --lr 0.1
}
