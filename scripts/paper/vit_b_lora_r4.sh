#!/usr/bin/env bash
# Paper rows: ViT-B/16 (timm vit_base_patch16_224), k-shot classification, LoRA r=4 on q and v of attn.qkv: 12 x 2 x 4 x (768 + 768) = 147456 parameters
#   (without the head, which is re-made and trained in every row), on CIFAR-100, CUB-200 and
#   Caltech-101 at 5 and 10 shots; 4 sampling seeds x 3 runs each, mean (std) accuracy.
# Hyper-parameters: UCDvision/NOLA vit/run.sh (lr 5e-3, batch 16, 50 epochs, no warm-up, AMP) with only
#   --train_type / --rank / --ka changed: the official code gives no other recipe for its baselines, so
#   the paper's own learning rates for them may differ (see docs/vit.md).
# Usage: bash scripts/paper/vit_b_lora_r4.sh [--dataset D] [--shots K] [--dry-run] [--resume]   (see vit_common.sh)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/vit_common.sh"
vit_parse_args "$@"
run_vit_row vit_b_lora_r4 base --lr 0.005 --train_type lora --rank 4
