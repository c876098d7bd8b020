"""Fold a NOLA / LoRA adapter written by llama_ft.py into its base and save a plain transformers model.

    python src/llama_merge.py --model_name_or_path meta-llama/Llama-2-7b-hf --bits 16 --bf16 \\
        --adapter ./trained_models/alpaca_llama2_7b_nola --output_dir ./llama2_7b_alpaca_merged

The result loads with ``AutoModelForCausalLM.from_pretrained(output_dir)``; a 4/8-bit base cannot be
merged into (use --bits 16 or 32).
"""
from __future__ import annotations

import argparse

import torch

from nola.causal.causal_lm import ADAPTER_BASE_FIX, load_causal_lm, save_merged
from nola.train.cli import add_flags, config_from
from nola.config import LlamaSource, MergeConfig
from nola.errors import fail, run_cli
from nola.fileio import check_writable
from nola.hf_adapter import load_adapter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_flags(parser, LlamaSource, "model", fields_only=("model_name_or_path", "bits", "bf16"))
    add_flags(parser, MergeConfig, "adapter and output")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    source, cfg = config_from(LlamaSource, args), config_from(MergeConfig, args)
    if source.bits in (4, 8):
        fail(f"--bits {source.bits}: an adapter cannot be merged into a quantised base; use --bits 16 or 32")
    check_writable(cfg.output_dir, "--output_dir", folder=True)
    model, tokenizer = load_causal_lm(source, torch.device("cpu"))
    load_adapter(model, cfg.adapter, fix=ADAPTER_BASE_FIX)
    save_merged(model, tokenizer, cfg.output_dir)


if __name__ == "__main__":
    run_cli(main)
