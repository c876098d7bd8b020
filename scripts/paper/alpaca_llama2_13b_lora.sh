#!/usr/bin/env bash
# Paper row: LLaMA-2 13B, Alpaca, LoRA r = 1 (alpha 16) on all seven linear projections of every layer.
# Hyper-parameters: UCDvision/NOLA llama/scripts/finetune_llama2_alpaca_13b_lora.sh (lr 0.0001 constant,
#   batch 16 x accumulation 16, 200 steps, adam_beta2 0.999, max_grad_norm 0.9, no weight decay,
#   no dropout, seed 0, source/target max length 384/512). Deliberate difference: the official row
#   trains LoRA on a 4-bit NF4 base (QLoRA); loralib cannot wrap bitsandbytes layers, so this row uses
#   a bf16 base (--bits 16 --bf16). The official script writes to ./output/llama-2-guanaco-7b;
#   this row writes to trained_models/alpaca_llama2_13b_lora.
# Usage: bash scripts/paper/alpaca_llama2_13b_lora.sh [--dry-run] [--resume] [--nproc_per_node N]
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/llama_common.sh"
parse_args "$@"
run_llama_row alpaca_llama2_13b_lora 13B 16 16 16 \
  --lora_dim 1 --lora_alpha 16 --lora_dropout 0.0 --lr 0.0001
