"""MMLU k-shot accuracy (per subject and averaged) of a causal LM, optionally with a NOLA / LoRA adapter.

    python eval/mmlu.py --model_name_or_path meta-llama/Llama-2-7b-hf \\
        --adapter ./trained_models/llama2_7b_alpaca_nola --shots 5 --data_dir data/mmlu --output mmlu.json

The protocol is Hendrycks et al.'s test/evaluate.py (see nola.causal.mmlu); results go to --output as JSON.
"""
from __future__ import annotations

import argparse

from nola.train.cli import add_flags, config_from
from nola.config import LaunchConfig, LlamaSource, MMLUConfig
from nola.errors import run_cli
from nola.causal.mmlu import run_mmlu


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_flags(parser, LaunchConfig, "device", fields_only=("device", "threads"))
    add_flags(parser, LlamaSource, "model", fields_only=("model_name_or_path", "bits", "bf16"))
    add_flags(parser, MMLUConfig, "MMLU")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_mmlu(config_from(LaunchConfig, args), config_from(LlamaSource, args), config_from(MMLUConfig, args))


if __name__ == "__main__":
    run_cli(main)
