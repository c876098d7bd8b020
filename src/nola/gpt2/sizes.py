"""Adapter sizes without base weights: what the adapter folder ``model.<step>/`` will weigh for any
GPT-2 card, and what an adapter folder on a ``transformers`` causal LM weighs next to LoRA's.

The model is built on the meta device (no memory, no weights), its adapter tensors are replaced by
zeros of the right shapes, and the folder is written by the save itself
(:func:`nola.gpt2.checkpoint.save_checkpoint`, :func:`nola.hf_adapter.save_adapter`), so the figure
includes the exact overhead (the JSON header, the safetensors header) and the b-bit packing. Values
do not change the size: tensors are stored uncompressed.

``python benchmarks/adapter_size.py`` prints the table for GPT-2 S/M/L on q and v.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch
from torch import nn

from nola.gpt2.checkpoint import save_checkpoint
from nola.config import LoRAConfig, NOLAConfig
from nola.adapters import count_trainable
from nola.gpt2.model import GPT2Config, GPT2LMModel

PAPER_BASE = "./pretrained_checkpoints/gpt2-{size}-pytorch_model.bin"
_CARD_SIZE = {"gpt2.sm": "small", "gpt2.md": "medium", "gpt2.lg": "large"}


def adapter_file_bytes(cfg: GPT2Config, adapter: NOLAConfig | LoRAConfig, base_path: str | None = None,
                       base_sha256: str | None = "0" * 64, step: int = 0) -> tuple[int, int]:
    """(bytes of the adapter folder, trainable parameters) for ``adapter`` on a ``cfg`` model."""
    is_nola = isinstance(adapter, NOLAConfig)
    skeleton = dataclasses.replace(adapter, mode="onthefly") if is_nola else None
    with torch.device("meta"):
        model = GPT2LMModel(cfg, nola=skeleton, lora=None if is_nola else adapter)
    if is_nola:  # record the configuration as given (mode included)
        model.nola_config = adapter
        model.adapter_spec = model.adapter_spec._replace(config=adapter)
    _zero_trainables(model)
    with tempfile.TemporaryDirectory() as tmp:
        _, size = save_checkpoint(model, tmp, base_path, base_sha256, step)
    return size, count_trainable(model)


PAPER_SETTINGS = [
    ("NOLA r=8 k=l=1000 fp32", NOLAConfig(rank=8, num_basis=1000, qv=True)),
    ("NOLA r=8 k=l=1000 4-bit", NOLAConfig(rank=8, num_basis=1000, qv=True, qbits=4)),
    ("NOLA r=8 k=l=1000 3-bit", NOLAConfig(rank=8, num_basis=1000, qv=True, qbits=3)),
    ("NOLA r=8 k=l=500 fp32", NOLAConfig(rank=8, num_basis=500, qv=True)),
    ("NOLA r=8 k=l=500 3-bit", NOLAConfig(rank=8, num_basis=500, qv=True, qbits=3)),
    ("NOLA r=8 k=l=375 fp32", NOLAConfig(rank=8, num_basis=375, qv=True)),
    ("NOLA r=8 k=l=375 3-bit", NOLAConfig(rank=8, num_basis=375, qv=True, qbits=3)),
    ("LoRA r=4 fp32", LoRAConfig(dim=4, alpha=32.0)),
    ("LoRA r=1 fp32", LoRAConfig(dim=1, alpha=32.0)),
]


def paper_sizes(card: str = "gpt2.md") -> list[tuple[str, int, int]]:
    """(setting, trainable parameters, file bytes) on q and v at the papers' settings."""
    cfg = GPT2Config.from_card(card)
    base = PAPER_BASE.format(size=_CARD_SIZE.get(card, card))
    rows = []
    for name, adapter in PAPER_SETTINGS:
        size, params = adapter_file_bytes(cfg, adapter, base)
        rows.append((name, params, size))
    return rows


CARDS = tuple(_CARD_SIZE)


def causal_adapter_size(model_dir: str | Path, adapter_dir: str | Path | None = None, lora_rank: int | None = None,
                        targets: list[str] | None = None) -> tuple[int, int]:
    """(bytes of the adapter folder's files, trained parameters) on a ``transformers`` causal LM.

    ``adapter_dir``: a folder written by :func:`nola.hf_adapter.save_adapter`, measured as it is (its
    parameters are the tensors its config lists). ``lora_rank``: what LoRA at that rank on ``targets``
    would write, found by writing it from a meta-device model of ``model_dir``'s configuration."""
    import json

    from transformers import AutoConfig, AutoModelForCausalLM

    from nola import hf_adapter
    from nola.lora_inject import inject_lora

    if adapter_dir is not None:
        folder = Path(adapter_dir)
        header = json.loads((folder / hf_adapter.CONFIG_FILE).read_text(encoding="utf-8"))
        params = sum(int(torch.Size(shape).numel()) for shape in header["tensors"].values())
        return hf_adapter.folder_bytes(folder), params
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    inject_lora(model, LoRAConfig(dim=lora_rank), list(targets or []))
    _zero_trainables(model)
    with tempfile.TemporaryDirectory() as tmp:
        return hf_adapter.folder_bytes(hf_adapter.save_adapter(model, tmp)), count_trainable(model)


def _zero_trainables(model: nn.Module) -> None:
    """Trainable meta tensors -> zeros of their shapes on the CPU (what a save needs; values don't matter)."""
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.requires_grad:
                setattr(module, name, nn.Parameter(torch.zeros(param.shape)))
