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

from nola.distributed import add_launch_args
from nola.errors import run_cli
from nola.options import add_model_args
from nola.train import add_train_args, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_launch_args(parser)
    add_model_args(parser)
    add_train_args(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    train(build_parser().parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
