"""Export a base, adapter or full checkpoint as a ``transformers`` GPT-2 folder (adapter merged).

    python src/export_hf.py --model_card gpt2.md --init_checkpoint trained_models/.../model.26290 --out gpt2_nola_e2e
    # then, anywhere: GPT2LMHeadModel.from_pretrained("gpt2_nola_e2e")
"""
from __future__ import annotations

import argparse

from nola.gpt2.card import card_config
from nola.train.cli import add_model_flags, model_flags
from nola.errors import fail, run_cli
from nola.fileio import check_writable
from nola.log import get_logger

log = get_logger("export_hf")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the merged model as a transformers GPT-2 folder")
    add_model_flags(parser)
    parser.add_argument("--out", required=True, help="output folder (config.json + model.safetensors)")
    args = parser.parse_args(argv)
    source, request = model_flags(args)
    if not source.init_checkpoint:
        fail("--init_checkpoint is required: the adapter, full or base checkpoint to export")
    card_config(source.model_card)
    check_writable(args.out, "--out", folder=True)
    import torch  # only once every flag has passed its check

    from nola.gpt2.build import build_model
    from nola.gpt2.checkpoint import metadata
    from nola.gpt2.export import export_hf

    built = build_model(source, torch.device("cpu"), request, hash_base=False)
    model = built.model.eval()
    kind = model.adapter and type(model.adapter).__name__.removesuffix("Config")
    provenance = {"init_checkpoint": source.init_checkpoint, "step": built.step,
                  **metadata(model, built.base_path, built.base_sha256)}
    out = export_hf(model, args.out, provenance)
    log.info("wrote %s (%s merged); load it with GPT2LMHeadModel.from_pretrained(%r)",
             out, kind or "no adapter", str(out))


if __name__ == "__main__":
    run_cli(main)
