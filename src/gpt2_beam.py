"""Beam-search decoding of a test file with a fine-tuned GPT-2 (NOLA / LoRA merged into the weights).

Runs under plain python, ``torch.distributed.launch`` or ``torchrun``; writes one
``{"id", "predict"}`` line per input line to ``--work_dir/--output_file`` (read by gpt2_decode.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nola.beam import BeamSettings, add_beam_args, predict_dataset, write_predictions
from nola.build import build_model
from nola.dataset import FTDataset
from nola.distributed import add_launch_args, barrier, cleanup, init_distributed
from nola.errors import fail, run_cli
from nola.log import get_logger
from nola.options import add_model_args

log = get_logger("gpt2_beam")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="GPT-2 beam decoding (microsoft/LoRA's NLG rule)")
    add_launch_args(parser)
    add_model_args(parser)
    add_beam_args(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        fail(f"--batch_size must be >= 1, got {args.batch_size}")
    try:
        settings = BeamSettings.from_args(args)
    except ValueError as exc:
        fail(str(exc))
    ctx = init_distributed(args)
    try:
        built = build_model(args, ctx.device, hash_base=False)
        model = built.model.eval()
        if model.nola is not None or model.lora_config is not None:
            model.merge_adapters()
            log.info("adapter merged into the base weights: decoding costs exactly the base model")
        dataset = FTDataset(args.data, args.seq_len, args.eval_len, vocab_size=model.config.vocab_size)
        predictions = predict_dataset(model, dataset, settings, args.batch_size, ctx)
        if predictions is not None:
            out = Path(args.work_dir) / args.output_file
            write_predictions(out, predictions)
            log.info("wrote %d predictions to %s", len(predictions), out)
        barrier()
    finally:
        cleanup()


if __name__ == "__main__":
    run_cli(main)
