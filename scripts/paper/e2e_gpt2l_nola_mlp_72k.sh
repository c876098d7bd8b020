#!/usr/bin/env bash
# Paper row: E2E, GPT-2 L, NOLA on the two MLP projections: rank 8, k = l = 500 bases, c = 1.0
#   -> 36 layers x 2 projections x (500 + 500) = 72,000 trainable parameters.
# Hyperparameters: UCDvision/NOLA README (lr 0.1, no weight decay, 5 epochs, batch 8, warmup 500,
#   label smoothing 0.1 on E2E).
# Second budget: half of the first (k = l = 500). The paper's table could not be read here,
#   so check this budget against it before quoting the row.
# Usage: bash scripts/paper/e2e_gpt2l_nola_mlp_72k.sh [--nproc_per_node N] [--dry-run]   (see common.sh)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"
run_row e2e_gpt2l_nola_mlp_72k gpt2.lg gpt2-large e2e \
  --lr 0.1 --weight_decay 0.0 --nola_rank 8 --nola_c 1.0 --nola_mlp --nola_num_basis 500
