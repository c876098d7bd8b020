#!/usr/bin/env bash
# Paper row: LLaMA-2 13B, Alpaca, NOLA on all seven linear projections of every layer, rank 16,
#   k = l = 512 bases per factor: 40 layers x 7 x (512 + 512) = 286,720 trainable parameters.
# Hyper-parameters: UCDvision/NOLA llama/scripts/finetune_llama2_alpaca_13b_nola.sh (4-bit NF4 base,
#   bf16, gradient checkpointing, lora_r 16 / lora_alpha 4 -> s = c / r = 4 / 16, lr 1e-3 constant
#   (its warmup_ratio 0.03 does nothing with the Hugging Face 'constant' schedule), batch 16 x
#   accumulation 16, 200 steps, adam_beta2 0.999, max_grad_norm 0.9, no weight decay, seed 0,
#   source/target max length 384/512); its NOLALinear draws a separate basis per projection and layer,
#   hence --nola_seed_per_layer. The official script writes to ./output/llama-2-guanaco-7b; this row
#   writes to trained_models/alpaca_llama2_13b_nola.
# Usage: bash scripts/paper/alpaca_llama2_13b_nola.sh [--dry-run] [--resume] [--nproc_per_node N]
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/llama_common.sh"
parse_args "$@"
run_llama_row alpaca_llama2_13b_nola 13B 4 16 16 \
  --nola_rank 16 --nola_c 4 --nola_num_basis 512 --nola_seed_per_layer --lr 0.001
