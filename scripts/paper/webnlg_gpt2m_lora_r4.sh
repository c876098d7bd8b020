#!/usr/bin/env bash
# Paper row: WebNLG 2017, GPT-2 M, LoRA r=4 on q,v (alpha 32)
#   (scored on all test categories, the seen ones (S) and the unseen ones (U), as in the papers)
#   -> 24 layers x 2 projections x 4 x (1024 + 1024) = 393,216 trainable parameters.
# Hyperparameters: LoRA paper Table 11 for WebNLG 2017 (lr 2e-4, weight decay 0.01, dropout 0.1,
#   label smoothing 0.1, 5 epochs, batch 8, warmup 500, beam 10, length penalty 0.8).
# Usage: bash scripts/paper/webnlg_gpt2m_lora_r4.sh [--nproc_per_node N] [--dry-run]   (see common.sh)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_args "$@"
run_row webnlg_gpt2m_lora_r4 gpt2.md gpt2-medium webnlg \
  --lr 0.0002 --weight_decay 0.01 --lora_dim 4 --lora_alpha 32 --lora_dropout 0.1
