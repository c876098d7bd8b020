#!/usr/bin/env bash
# Paper row: WebNLG 2017, GPT-2 M, NOLA on q,v: rank 8, k = l = 1000 bases, c = 1.0
#   (scored on all test categories, the seen ones (S) and the unseen ones (U), as in the papers)
#   -> 24 layers x 2 projections x (1000 + 1000) = 96,000 trainable parameters.
# Hyperparameters: the NOLA README's E2E settings (lr 0.1, no weight decay, 5 epochs, batch 8,
#   warmup 500) with the LoRA paper's WebNLG 2017 label smoothing (0.1, Table 11) and beam settings.
# Usage: bash scripts/paper/webnlg_gpt2m_nola.sh [--nproc_per_node N] [--dry-run]   (see common.sh)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"
run_row webnlg_gpt2m_nola gpt2.md gpt2-medium webnlg \
  --lr 0.1 --weight_decay 0.0 --nola_rank 8 --nola_c 1.0 --nola_qv --nola_num_basis 1000
