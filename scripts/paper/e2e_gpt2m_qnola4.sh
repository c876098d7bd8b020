#!/usr/bin/env bash
# Paper row: E2E, GPT-2 M, quantised NOLA on q,v: 4-bit coefficients (quantisation-aware training),
#   rank 8, k = l = 1000 bases, c = 0.01 -> 96,000 coefficients of 4 bits (48,000 bytes packed).
# Hyperparameters: UCDvision/NOLA README, "Finetuning with NOLA (Quantized)" (lr 0.1, c 0.01,
#   --qnola --qbits; otherwise as the float rows).
# Usage: bash scripts/paper/e2e_gpt2m_qnola4.sh [--nproc_per_node N] [--dry-run]   (see common.sh)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"
run_row e2e_gpt2m_qnola4 gpt2.md gpt2-medium e2e \
  --lr 0.1 --weight_decay 0.0 --nola_rank 8 --nola_c 0.01 --nola_qv --nola_num_basis 1000 --qnola --qbits 4
