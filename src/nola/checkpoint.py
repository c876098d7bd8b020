"""Checkpoint I/O: GPT-2 base weights in every published layout, and compact adapter files.

An adapter file (``model.<step>.pt``) holds only what NOLA says must be stored: the coefficients
(b-bit packed when quantised), the adapter configuration (seeds included), the model card and the
identity of the base checkpoint (path + SHA-256). ``--save_full`` files hold a full state dict
under ``model_state_dict`` as microsoft/LoRA's scripts wrote it, plus the same metadata.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from nola.errors import fail
from nola.fileio import atomic_torch_save
from nola.layers import LoRAConfig, NOLAConfig
from nola.log import get_logger
from nola.model import GPT2LMModel, redraw_tied_head
from nola.quant import dequantize, pack_codes, quantize, unpack_codes

ADAPTER_FORMAT = "nola-adapter"
FORMAT_VERSION = 1
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_TIED_HEADS = ("lm_head.weight", "lm_head.decoder.weight")
_SUFFIXES = {".g": ".weight", ".b": ".bias", ".w": ".weight"}

log = get_logger(__name__)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a ``.safetensors`` or ``torch.save`` file into a dict (CPU), with one-line errors."""
    path = Path(path)
    if not path.is_file():
        fail(f"checkpoint {path} not found: run `bash download_pretrained_checkpoints.sh` or fix the path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        fail(f"checkpoint {path} is unreadable or truncated ({type(exc).__name__}): download or re-save it")
    if not isinstance(obj, dict):
        fail(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    return obj


def is_adapter(ckpt: dict) -> bool:
    return ckpt.get("format") == ADAPTER_FORMAT and "tensors" in ckpt


def split_state(ckpt: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Base weights (keys relative to ``transformer.``) and adapter tensors of a full/base file."""
    state = ckpt.get("model_state_dict", ckpt)
    base, adapter = {}, {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        name = key.removeprefix("module.")
        if name.startswith("nola.") or "lora_" in name:
            adapter[name] = value
            continue
        name = name.removeprefix("transformer.")
        for old, new in _SUFFIXES.items():
            if name.endswith(old):
                name = name[: -len(old)] + new
        if name.endswith(_BUFFER_SUFFIXES) or name in _TIED_HEADS:
            continue
        base[name] = value
    return base, adapter


def load_base_weights(model: GPT2LMModel, base: dict[str, torch.Tensor], source: str) -> None:
    """Copy base GPT-2 weights into ``model``; shape mismatches and missing keys are errors."""
    card = model.config.card
    expected = {k.removeprefix("transformer."): v for k, v in model.state_dict().items()
                if k.startswith("transformer.") and "lora_" not in k}
    missing = sorted(set(expected) - set(base))
    unexpected = sorted(set(base) - set(expected))
    for name in sorted(set(expected) & set(base)):
        want, got = tuple(expected[name].shape), tuple(base[name].shape)
        if want != got:
            fail(f"{source}: tensor {name} has shape {got} but model card {card} expects {want}; "
                 f"pass the --model_card this checkpoint was made for")
    if missing:
        fail(f"{source}: {len(missing)} tensors missing for model card {card} (e.g. {', '.join(missing[:4])}); "
             f"is this a GPT-2 checkpoint for that card?")
    if unexpected:
        log.warning("%s: ignoring %d unexpected tensors: %s", source, len(unexpected), ", ".join(unexpected[:8]))
    with torch.no_grad():
        for name, tensor in expected.items():
            tensor.copy_(base[name])
    redraw_tied_head(model.transformer)  # as the original's load_weight, which re-ties its head


def adapter_kind(model: GPT2LMModel) -> str | None:
    if model.nola_config is not None:
        return "nola"
    return "lora" if model.lora_config is not None else None


def _adapter_meta(model: GPT2LMModel, base_path: str | None, base_sha256: str | None, step: int) -> dict:
    kind = adapter_kind(model)
    cfg = model.nola_config if kind == "nola" else model.lora_config
    meta = {
        "format": ADAPTER_FORMAT, "version": FORMAT_VERSION, "adapter": kind,
        "config": cfg.to_dict() if cfg else None, "model_config": model.config.to_dict(),
        "base": {"path": base_path, "sha256": base_sha256}, "step": step,
    }
    if kind == "nola":
        meta["seeds"] = {role: {"A": list(g.seeds_a), "B": list(g.seeds_b)} for role, g in model.nola.items()}
    return meta


def _pack(state: dict[str, torch.Tensor], qbits: int) -> dict:
    """All quantised coefficient matrices as one b-bit code stream and one float32 scale vector
    (one scale per row), so the file holds two small tensors whatever the number of layers."""
    names, shapes, codes, scales = [], [], [], []
    for name, tensor in state.items():
        q, scale = quantize(tensor.detach().float().cpu(), qbits)
        names.append(name)
        shapes.append(list(tensor.shape))
        codes.append(q.reshape(-1))
        scales.append(scale.reshape(-1))
    return {"names": names, "shapes": shapes, "bits": qbits,
            "codes": pack_codes(torch.cat(codes), qbits), "scale": torch.cat(scales)}


def _unpack(packed: dict) -> dict[str, torch.Tensor]:
    shapes = [torch.Size(s) for s in packed["shapes"]]
    codes = unpack_codes(packed["codes"], packed["bits"], sum(s.numel() for s in shapes))
    out, at, row = {}, 0, 0
    for name, shape in zip(packed["names"], shapes):
        rows = shape[:-1].numel()
        block = codes[at : at + shape.numel()].view(shape)
        out[name] = dequantize(block, packed["scale"][row : row + rows].view(shape[:-1]), packed["bits"])
        at, row = at + shape.numel(), row + rows
    return out


def save_adapter(model: GPT2LMModel, path: str | os.PathLike, base_path: str | None = None,
                 base_sha256: str | None = None, step: int = 0, full: bool = False) -> int:
    """Write the adapter file (or, with ``full``, a full state dict plus metadata); return bytes."""
    meta = _adapter_meta(model, base_path, base_sha256, step)
    qbits = model.nola_config.qbits if model.nola_config is not None else None
    if full:
        meta["model_state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    else:
        state = model.adapter_state()
        meta["tensors"] = {k: v.detach().cpu().clone() for k, v in state.items() if qbits is None}
        if qbits is not None:
            meta["quantised"] = _pack(state, qbits)
    return atomic_torch_save(meta, path, compact=not full)


def adapter_tensors(ckpt: dict) -> dict[str, torch.Tensor]:
    """The adapter tensors of an adapter file, dequantised to float."""
    return {**ckpt["tensors"], **(_unpack(ckpt["quantised"]) if "quantised" in ckpt else {})}


def load_adapter_tensors(model: GPT2LMModel, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy adapter tensors into ``model``; every expected key must be there with its shape."""
    expected = model.adapter_state()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        fail(f"{source}: adapter tensors do not match the model's adapter "
             f"(missing {missing[:4]}, unexpected {unexpected[:4]}); check the adapter flags")
    live = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                fail(f"{source}: adapter tensor {name} has shape {tuple(tensor.shape)}, "
                     f"the model expects {tuple(expected[name].shape)}; check --nola_num_basis / --lora_dim")
            live[name].copy_(tensor)


def adapter_config_from(ckpt: dict) -> NOLAConfig | LoRAConfig | None:
    """The adapter configuration recorded in an adapter or full checkpoint, if any."""
    kind, cfg = ckpt.get("adapter"), ckpt.get("config")
    if kind == "nola":
        return NOLAConfig(**cfg)
    if kind == "lora":
        return LoRAConfig(**cfg)
    return None
