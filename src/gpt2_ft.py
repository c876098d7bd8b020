"""Fine-tune GPT-2 with NOLA, quantised NOLA or LoRA on E2E / DART / WebNLG.

microsoft/LoRA's ``gpt2_ft.py`` interface, with the NOLA flags added; run it under
``python -m torch.distributed.launch``, ``torchrun`` or plain ``python``:

    python -m torch.distributed.launch --nproc_per_node=1 src/gpt2_ft.py \\
        --train_data ./data/e2e/train.jsonl --valid_data ./data/e2e/valid.jsonl \\
        --model_card gpt2.md --init_checkpoint ./pretrained_checkpoints/gpt2-medium-pytorch_model.bin \\
        --lr 0.1 --weight_decay 0.0 --correct_bias --adam_beta2 0.999 --scheduler linear \\
        --warmup_step 500 --max_epoch 5 --nola_rank 8 --nola_c 1.0 --nola_qv \\
        --label_smooth 0.1 --work_dir ./trained_models/GPT2_M/e2e --random_seed 110
"""
from __future__ import annotations

import argparse

from nola.gpt2.card import card_config, check_limits
from nola.train.cli import add_flags, add_launch_flags, add_model_flags, config_from, launch_config, model_flags
from nola.config import OptimConfig, TrainConfig
from nola.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_launch_flags(parser)
    add_model_flags(parser)
    add_flags(parser, TrainConfig, "training, logging and checkpoints")
    add_flags(parser, OptimConfig, "optimiser")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    source, request = model_flags(args)
    launch, cfg, optim = launch_config(args), config_from(TrainConfig, args), config_from(OptimConfig, args)
    check_limits(card_config(source.model_card), cfg.seq_len)
    from nola.gpt2.train import train  # torch comes in only once every flag has passed its check

    train(launch, source, request, cfg, optim)


if __name__ == "__main__":
    run_cli(main)
