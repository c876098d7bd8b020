#!/usr/bin/env bash
# Paper rows: ViT-L/16 (timm vit_large_patch16_224), k-shot classification, NOLA on fc1 and fc2 of every block, rank 1, k = l = 512: 24 x 2 x 1024 = 49152 parameters
#   (without the head, which is re-made and trained in every row), on CIFAR-100, CUB-200 and
#   Caltech-101 at 5 and 10 shots; 4 sampling seeds x 3 runs each, mean (std) accuracy.
# Hyper-parameters: UCDvision/NOLA vit/run.sh (lr 5e-3, batch 16, 50 epochs, no warm-up, AMP) with only
#   --train_type / --rank / --ka changed: the official code gives no other recipe for its baselines, so
#   the paper's own learning rates for them may differ (see docs/vit.md).
# Usage: bash scripts/paper/vit_l_nola_mlp_k512.sh [--dataset D] [--shots K] [--dry-run] [--resume]   (see vit_common.sh)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/vit_common.sh"
vit_parse_args "$@"
run_vit_row vit_l_nola_mlp_k512 large --lr 0.005 --train_type nola_mlp --rank 1 --ka 512
