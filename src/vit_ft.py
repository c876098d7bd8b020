"""k-shot image classification with a ViT (timm) and NOLA, LoRA, a linear probe or full fine-tuning.

UCDvision/NOLA vit/train_timm.py's protocol; e.g. the paper's ViT-L, CIFAR-100, 5-shot, NOLA-MLP row,
sampling seed 0, run 0:

    python src/vit_ft.py --train_data_path data/vit/cifar100 --vit large --train_type nola_mlp \\
        --rank 1 --ka 1024 --lr 5e-3 --batch_size 16 --epochs 50 --kshot 5 --kshot_seed 0 --seed 0 --fp16 \\
        --outdir trained_models/vit/cifar100_5shot_nola_mlp/v0/run0
"""
from __future__ import annotations

import argparse

from nola.train.cli import add_flags, config_from
from nola.config import LaunchConfig, ViTConfig
from nola.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_flags(parser, LaunchConfig, "launch", fields_only=("device", "threads"))
    add_flags(parser, ViTConfig, "model, data, optimiser and outputs")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    launch, cfg = config_from(LaunchConfig, args), config_from(ViTConfig, args)
    from nola.vit.train import train_vit  # torch only after the flags are checked

    train_vit(launch, cfg)


if __name__ == "__main__":
    run_cli(main)
