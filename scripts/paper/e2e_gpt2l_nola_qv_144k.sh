#!/usr/bin/env bash
# Paper row: E2E, GPT-2 L, NOLA on q,v: rank 8, k = l = 1000 bases, c = 1.0
#   -> 36 layers x 2 projections x (1000 + 1000) = 144,000 trainable parameters.
# Hyperparameters: UCDvision/NOLA README (lr 0.1, no weight decay, 5 epochs, batch 8, warmup 500,
#   label smoothing 0.1 on E2E).
# Usage: bash scripts/paper/e2e_gpt2l_nola_qv_144k.sh [--nproc_per_node N] [--dry-run]   (see common.sh)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"
run_row e2e_gpt2l_nola_qv_144k gpt2.lg gpt2-large e2e \
  --lr 0.1 --weight_decay 0.0 --nola_rank 8 --nola_c 1.0 --nola_qv --nola_num_basis 1000
