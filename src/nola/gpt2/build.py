"""Build the model a script asks for from its :class:`~nola.config.ModelSource` and adapter request.

``--init_checkpoint`` may be a base GPT-2 file (adapter from the flags, freshly initialised), an
adapter (the folder ``model.<step>/``, or an earlier version's ``model.<step>.pt`` file; adapter from
it, base from its recorded path or ``--base_checkpoint``, verified by SHA-256), or a full state dict
(ours with metadata, or microsoft/LoRA's plain one).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Sequence

import torch

from nola.gpt2.card import card_config
from nola.gpt2.checkpoint import (adapter_config_from, adapter_tensors, check_metadata, is_adapter,
                             load_adapter_tensors, load_base_weights, read_checkpoint, split_state)
from nola.errors import fail
from nola.fileio import sha256_file
from nola.config import AdapterConfig, AdapterRequest, LoRAConfig, ModelSource, NOLAConfig, flag_of, identity_fields
from nola.log import get_logger
from nola.gpt2.model import GPT2Config, GPT2LMModel, describe_trainable
from nola.train.cli import add_model_flags, model_flags

log = get_logger(__name__)


@dataclass
class BuiltModel:
    model: GPT2LMModel
    base_path: str | None
    base_sha256: str | None
    step: int = 0


def model_config(card: str) -> GPT2Config:
    return card_config(card)


def resolve_adapter(request: AdapterRequest, mode: str, recorded: AdapterConfig | None = None) -> AdapterConfig | None:
    """The adapter to build: the checkpoint's (``recorded``) checked against what was given, or one
    built from what was given. Contradictions and NOLA+LoRA together are errors."""
    if request.conflict():
        fail(request.conflict())
    if recorded is not None:
        return _check_recorded(recorded, request, mode)
    try:
        if request.wants_nola:
            if not (request.nola.get("qv") or request.nola.get("mlp")):
                fail("--nola_rank needs a target: add --nola_qv and/or --nola_mlp")
            return NOLAConfig(**{**request.nola, "mode": mode})
        if request.wants_lora:
            return LoRAConfig(**request.lora)
    except ValueError as exc:
        fail(str(exc))
    return None


def _check_recorded(recorded: AdapterConfig, request: AdapterRequest, mode: str) -> AdapterConfig:
    is_nola = isinstance(recorded, NOLAConfig)
    kind = "NOLA" if is_nola else "LoRA"
    if (is_nola and request.wants_lora) or (not is_nola and request.wants_nola):
        fail(f"the checkpoint holds a {kind} adapter but {'LoRA' if is_nola else 'NOLA'} flags were given: drop them")
    given = request.nola if is_nola else request.lora
    flags = {f.name: flag_of(f) for f in fields(recorded)}
    for name in identity_fields(type(recorded)):
        if name in given and given[name] != getattr(recorded, name):
            fail(f"--{flags[name]} {given[name]} contradicts the checkpoint ({name}={getattr(recorded, name)}): "
                 f"drop the flag or use the matching checkpoint")
    runtime = {k: v for k, v in given.items() if k not in identity_fields(type(recorded))}
    values = {**recorded.to_dict(), **runtime}
    if is_nola:
        values["mode"] = mode
    return type(recorded)(**values)


def build_model(source: ModelSource, device: torch.device, request: AdapterRequest | None = None,
                hash_base: bool = True) -> BuiltModel:
    """The model, on ``device``, with base weights and adapter loaded as ``source`` and the
    adapter ``request`` say; a checkpoint's metadata block is checked by :func:`check_metadata`."""
    request = request or AdapterRequest()
    cfg = model_config(source.model_card)
    path = source.init_checkpoint
    ckpt = read_checkpoint(path) if path else {}
    recorded = adapter_config_from(ckpt)
    try:
        adapter = resolve_adapter(request, source.mode_for(device.type), recorded)
        model = GPT2LMModel(cfg, nola=adapter if isinstance(adapter, NOLAConfig) else None,
                            lora=adapter if isinstance(adapter, LoRAConfig) else None)
    except ValueError as exc:
        fail(str(exc))
    base_path, base_sha, step = path, None, int(ckpt.get("step", 0) or 0)
    if is_adapter(ckpt):
        base_path = source.base_checkpoint or (ckpt.get("base") or {}).get("path")
        if base_path is None:
            fail(f"{path}: this adapter was trained on a randomly initialised GPT-2 (gpt2_ft.py without "
                 f"--init_checkpoint), whose weights were not kept: train it again from a base checkpoint")
        base_sha = check_metadata(ckpt, cfg, path, base_path)
        base, _ = split_state(read_checkpoint(base_path))
        load_base_weights(model, base, base_path)
        load_adapter_tensors(model, adapter_tensors(ckpt), path)
    elif path:
        if "model_config" in ckpt:
            check_metadata(ckpt, cfg, path, None)
        base, extra = split_state(ckpt)
        load_base_weights(model, base, path)
        if extra and adapter is not None:
            load_adapter_tensors(model, extra, path)
        elif extra:
            log.warning("%s holds %d adapter tensors but no adapter flags were given; ignoring them", path, len(extra))
        if hash_base:
            base_sha = sha256_file(path)
    log.info(describe_trainable(model))
    return BuiltModel(model.to(device), base_path, base_sha, step)


def build_from_flags(argv: Sequence[str], device: torch.device, hash_base: bool = True) -> BuiltModel:
    """The model that the model/adapter flags ``argv`` describe (as the scripts build it)."""
    parser = argparse.ArgumentParser()
    add_model_flags(parser)
    source, request = model_flags(parser.parse_args(list(argv)))
    return build_model(source, device, request, hash_base=hash_base)
