"""Build the model a script asks for from its flags and ``--init_checkpoint``.

``--init_checkpoint`` may be a base GPT-2 file (adapter from the flags, freshly initialised), an
adapter checkpoint (adapter from the file, base from its recorded path or ``--base_checkpoint``,
verified by SHA-256), or a full state dict (ours with metadata, or microsoft/LoRA's plain one).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from nola.checkpoint import (adapter_config_from, adapter_tensors, is_adapter, load_adapter_tensors,
                             load_base_weights, read_checkpoint, split_state)
from nola.errors import fail
from nola.fileio import sha256_file
from nola.config import LoRAConfig, NOLAConfig
from nola.log import get_logger
from nola.model import GPT2Config, GPT2LMModel, describe_trainable
from nola.options import resolve_adapter

log = get_logger(__name__)


@dataclass
class BuiltModel:
    model: GPT2LMModel
    base_path: str | None
    base_sha256: str | None
    step: int = 0


def model_config(card: str) -> GPT2Config:
    try:
        return GPT2Config.from_card(card)
    except ValueError as exc:
        fail(str(exc))


def _check_card(cfg: GPT2Config, recorded: dict | None, source: str) -> None:
    if not recorded:
        return
    for key in ("n_embd", "n_layer", "n_head", "vocab_size"):
        if recorded.get(key) != getattr(cfg, key):
            fail(f"{source} was trained with {key}={recorded.get(key)} (card {recorded.get('card')}) "
                 f"but --model_card {cfg.card} has {key}={getattr(cfg, key)}: pass the matching --model_card")


def _verified_base(args: argparse.Namespace, recorded: dict, source: str) -> tuple[str, str | None]:
    path = args.base_checkpoint or recorded.get("path")
    if not path or not Path(path).is_file():
        fail(f"{source}: base checkpoint {path!r} not found; pass --base_checkpoint PATH to the GPT-2 file it was trained on")
    want = recorded.get("sha256")
    got = sha256_file(path) if want else None
    if want and got != want:
        fail(f"--base_checkpoint {path}: SHA-256 {got[:12]}... differs from the {want[:12]}... "
             f"{source} was trained on; use that exact base file")
    return path, want


def build_model(args: argparse.Namespace, device: torch.device, hash_base: bool = True) -> BuiltModel:
    """The model, on ``device``, with base weights and adapter loaded as the flags/checkpoint say."""
    cfg = model_config(args.model_card)
    source = args.init_checkpoint
    ckpt = read_checkpoint(source) if source else {}
    recorded = adapter_config_from(ckpt)
    _check_card(cfg, ckpt.get("model_config"), source)
    try:
        adapter = resolve_adapter(args, device.type, recorded)
        model = GPT2LMModel(cfg, nola=adapter if isinstance(adapter, NOLAConfig) else None,
                            lora=adapter if isinstance(adapter, LoRAConfig) else None)
    except ValueError as exc:
        fail(str(exc))
    base_path, base_sha, step = source, None, int(ckpt.get("step", 0) or 0)
    if is_adapter(ckpt):
        base_path, base_sha = _verified_base(args, ckpt.get("base", {}), source)
        base, _ = split_state(read_checkpoint(base_path))
        load_base_weights(model, base, base_path)
        load_adapter_tensors(model, adapter_tensors(ckpt), source)
    elif source:
        base, extra = split_state(ckpt)
        load_base_weights(model, base, source)
        if extra and adapter is not None:
            load_adapter_tensors(model, extra, source)
        elif extra:
            log.warning("%s holds %d adapter tensors but no adapter flags were given; ignoring them", source, len(extra))
        if hash_base:
            base_sha = sha256_file(source)
    log.info(describe_trainable(model))
    return BuiltModel(model.to(device), base_path, base_sha, step)

