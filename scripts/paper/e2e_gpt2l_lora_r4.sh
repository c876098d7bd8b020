#!/usr/bin/env bash
# Paper row: E2E, GPT-2 L, LoRA r=4 on q,v (alpha 32, dropout 0.1)
#   -> 36 layers x 2 projections x 4 x (1280 + 1280) = 737,280 trainable parameters.
# Hyperparameters: microsoft/LoRA examples/NLG README and LoRA paper Table 11 (lr 2e-4, weight
#   decay 0.01, 5 epochs, batch 8, warmup 500, label smoothing 0.1); alpha stays 32 at every rank,
#   as the LoRA paper does when it varies r.
# Usage: bash scripts/paper/e2e_gpt2l_lora_r4.sh [--nproc_per_node N] [--dry-run]   (see common.sh)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"
run_row e2e_gpt2l_lora_r4 gpt2.lg gpt2-large e2e \
  --lr 0.0002 --weight_decay 0.01 --lora_dim 4 --lora_alpha 32 --lora_dropout 0.1
