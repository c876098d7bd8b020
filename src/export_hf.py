"""Export a base, adapter or full checkpoint as a ``transformers`` GPT-2 folder (adapter merged).

    python src/export_hf.py --model_card gpt2.md --init_checkpoint trained_models/.../model.26290.pt --out gpt2_nola_e2e
    # then, anywhere: GPT2LMHeadModel.from_pretrained("gpt2_nola_e2e")
"""
from __future__ import annotations

import argparse

import torch

from nola.build import build_model
from nola.checkpoint import adapter_kind
from nola.errors import fail, run_cli
from nola.export import export_hf
from nola.log import get_logger
from nola.options import add_model_args

log = get_logger("export_hf")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the merged model as a transformers GPT-2 folder")
    add_model_args(parser)
    parser.add_argument("--out", required=True, help="output folder (config.json + model.safetensors)")
    args = parser.parse_args(argv)
    if not args.init_checkpoint:
        fail("--init_checkpoint is required: the adapter, full or base checkpoint to export")
    built = build_model(args, torch.device("cpu"), hash_base=False)
    model = built.model.eval()
    kind = adapter_kind(model)
    adapter = model.nola_config if kind == "nola" else model.lora_config
    provenance = {"init_checkpoint": args.init_checkpoint, "base_checkpoint": built.base_path,
                  "base_sha256": built.base_sha256, "step": built.step, "adapter": kind,
                  "adapter_config": adapter.to_dict() if adapter is not None else None}
    out = export_hf(model, args.out, provenance)
    log.info("wrote %s (%s merged); load it with GPT2LMHeadModel.from_pretrained(%r)",
             out, kind.upper() if kind else "no adapter", str(out))


if __name__ == "__main__":
    run_cli(main)
