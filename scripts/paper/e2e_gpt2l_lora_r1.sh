#!/usr/bin/env bash
# Paper row: E2E, GPT-2 L, LoRA r=1 on q,v (alpha 32, dropout 0.1)
#   -> 36 layers x 2 projections x 1 x (1280 + 1280) = 184,320 trainable parameters.
# Hyperparameters: microsoft/LoRA examples/NLG README and LoRA paper Table 11 (lr 2e-4, weight
#   decay 0.01, 5 epochs, batch 8, warmup 500, label smoothing 0.1); alpha stays 32 at every rank,
#   as the LoRA paper does when it varies r.
# No published number for this row was available here (see results/published.json).
# Usage: bash scripts/paper/e2e_gpt2l_lora_r1.sh [--nproc_per_node N] [--dry-run]   (see common.sh)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"
run_row e2e_gpt2l_lora_r1 gpt2.lg gpt2-large e2e \
  --lr 0.0002 --weight_decay 0.01 --lora_dim 1 --lora_alpha 32 --lora_dropout 0.1
