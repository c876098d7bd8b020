"""Beam-search a data-to-text file with any transformers causal LM and write the scorers' files.

    python src/llama_beam.py --model_name_or_path pretrained_checkpoints/smollm2-135m-instruct --bits 32 \\
        --adapter ./trained_models/smollm2_e2e_nola --data data/e2e/test_formatted.jsonl \\
        --beam 10 --length_penalty 0.8 --no_repeat_ngram_size 4 --repetition_penalty 1.0 --eval_len 64 \\
        --batch_size 10 --output_ref_file e2e_ref.txt --output_pred_file e2e_pred.txt
    python eval/e2e/measure_scores.py e2e_ref.txt e2e_pred.txt -p

Prompts are nola.causal.d2t's (the training prompt); each distinct context is decoded once with
microsoft/LoRA's beam rule (nola.decoding.beam), stopping at the tokenizer's EOS; the files have
gpt2_decode.py's layout (--ref_type e2e|webnlg|dart).
"""
from __future__ import annotations

import argparse

from nola.train.cli import add_flags, config_from
from nola.config import BeamSettings, CausalDecodeConfig, LaunchConfig, LlamaSource
from nola.errors import run_cli
from nola.log import get_logger

log = get_logger("llama_beam")
# The tokenizer's EOS ends every hypothesis: BeamSettings' --eos_token_id (GPT-2's 50256) has no flag here.
BEAM_FLAGS = ("beam", "eval_len", "length_penalty", "no_repeat_ngram_size", "repetition_penalty", "min_length")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_flags(parser, LaunchConfig, "device", fields_only=("device", "threads"))
    add_flags(parser, LlamaSource, "model", fields_only=("model_name_or_path", "bits", "bf16"))
    add_flags(parser, CausalDecodeConfig, "data and output")
    add_flags(parser, BeamSettings, "beam search", fields_only=BEAM_FLAGS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    launch, source = config_from(LaunchConfig, args), config_from(LlamaSource, args)
    cfg, settings = config_from(CausalDecodeConfig, args), config_from(BeamSettings, args)
    from nola.causal.causal_decode import run_causal_decode

    count = run_causal_decode(launch, source, cfg, settings)
    log.info("wrote %d contexts: references %s, predictions %s", count, cfg.output_ref_file, cfg.output_pred_file)


if __name__ == "__main__":
    run_cli(main)
