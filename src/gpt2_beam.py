"""Beam-search decoding of a test file with a fine-tuned GPT-2 (NOLA / LoRA merged into the weights).

Runs under plain python, ``torch.distributed.launch`` or ``torchrun``; writes one
``{"id", "predict"}`` line per input line to ``--work_dir/--output_file`` (read by gpt2_decode.py).
"""
from __future__ import annotations

import argparse

from nola.gpt2.card import card_config, check_limits
from nola.train.cli import add_flags, add_launch_flags, add_model_flags, config_from, launch_config, model_flags
from nola.config import BeamSettings, DecodeConfig
from nola.errors import fail, run_cli
from nola.fileio import check_writable
from nola.log import get_logger

log = get_logger("gpt2_beam")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="GPT-2 beam decoding (microsoft/LoRA's NLG rule)")
    add_launch_flags(parser)
    add_model_flags(parser)
    add_flags(parser, DecodeConfig, "data and output")
    add_flags(parser, BeamSettings, "beam search")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    source, request = model_flags(args)
    launch, run, settings = launch_config(args), config_from(DecodeConfig, args), config_from(BeamSettings, args)
    if not source.init_checkpoint:
        fail("--init_checkpoint is required: the adapter, full or base checkpoint to decode with")
    card = card_config(source.model_card)
    check_limits(card, run.seq_len, settings)
    check_writable(run.output_path, "--output_file")
    # torch comes in only once every flag has passed its check
    from nola.gpt2.beam import predict_dataset, write_predictions
    from nola.gpt2.build import build_model
    from nola.gpt2.dataset import FTDataset
    from nola.train.distributed import barrier, cleanup, init_distributed

    dataset = FTDataset(run.data, run.seq_len, settings.eval_len, vocab_size=card.vocab_size)
    ctx = init_distributed(launch)
    try:
        model = build_model(source, ctx.device, request, hash_base=False).model.eval()
        if model.adapter is not None:
            model.merge_adapters()
            log.info("adapter merged into the base weights: decoding costs exactly the base model")
        predictions = predict_dataset(model, dataset, settings, run.batch_size, ctx)
        if predictions is not None:
            write_predictions(run.output_path, predictions)
            log.info("wrote %d predictions to %s", len(predictions), run.output_path)
        barrier()
    finally:
        cleanup()


if __name__ == "__main__":
    run_cli(main)
