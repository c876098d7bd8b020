"""Fine-tune a LLaMA-2 (any transformers causal LM) with NOLA, qNOLA or LoRA on Alpaca or data-to-text.

UCDvision/NOLA's llama/qlora.py recipe (Alpaca prompt, loss on the response, 4-bit NF4 base on
CUDA); run it under plain ``python``, ``python -m torch.distributed.launch`` or ``torchrun``:

    python src/llama_ft.py --model_name_or_path meta-llama/Llama-2-7b-hf --dataset alpaca \\
        --nola_rank 16 --nola_c 4 --nola_num_basis 512 --bits 4 --bf16 --gradient_checkpointing \\
        --output_dir ./trained_models/llama2_7b_alpaca_nola

A ``--dataset`` named ``*_formatted.jsonl`` (E2E / WebNLG / DART as create_datasets.sh writes them) trains
data-to-text with :mod:`nola.causal.d2t`'s prompt (see :mod:`nola.causal.causal_data`); ``--eval_dataset`` logs a
validation loss. ``--peft_method vera|vblora|fourierft|tinylora --peft_options 'k=v,...'`` trains one of
HF PEFT's methods instead, on the same loop (:mod:`nola.causal.peft_baselines`).
"""
from __future__ import annotations

import argparse

from nola.train.cli import adapter_request, add_adapter_flags, add_flags, add_peft_flags, config_from
from nola.config import AlpacaTrainConfig, LaunchConfig, LlamaSource
from nola.errors import run_cli
from nola.causal.llama_train import train_alpaca


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_flags(parser, LaunchConfig, "launch", fields_only=("local_rank", "device", "threads", "dist_timeout"))
    add_flags(parser, LlamaSource, "model")
    add_adapter_flags(parser)
    add_peft_flags(parser)
    add_flags(parser, AlpacaTrainConfig, "data, optimiser and outputs")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    train_alpaca(config_from(LaunchConfig, args), config_from(LlamaSource, args), adapter_request(args),
                 config_from(AlpacaTrainConfig, args))


if __name__ == "__main__":
    run_cli(main)
