"""Checkpoint I/O: GPT-2 base weights in every published layout, and compact adapter files.

An adapter file (``model.<step>.pt``) holds only what NOLA says must be stored: the coefficients
(b-bit packed when quantised), the adapter configuration (seeds included), the model card and the
identity of the base checkpoint (path + SHA-256). ``--save_full`` files hold a full state dict
under ``model_state_dict`` as microsoft/LoRA's scripts wrote it, plus the same metadata. Both are
sealed with a content checksum (:mod:`nola.integrity`) that :func:`read_checkpoint` verifies.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from nola.errors import fail
from nola.fileio import atomic_torch_save, sha256_file
from nola.integrity import check_schema, check_sealed, check_tensors, read_file, seal
from nola.config import AdapterConfig, adapter_from_dict, adapter_kind
from nola.adapters import is_adapter_key
from nola.log import get_logger
from nola.gpt2.model import GPT2Config, GPT2LMModel, redraw_tied_head
from nola.quant import pack_state, unpack_state

ADAPTER_FORMAT = "nola-adapter"
FORMAT_VERSION = 1
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_TIED_HEADS = ("lm_head.weight", "lm_head.decoder.weight")
_SUFFIXES = {".g": ".weight", ".b": ".bias", ".w": ".weight"}
_SCHEMA = {"version": int, "adapter": (str, type(None)), "config": (dict, type(None)), "model_config": dict,
           "base": dict, "step": int}
_QUANTISED = {"names": list, "shapes": list, "bits": int, "codes": torch.Tensor, "scale": torch.Tensor}
READ_FIX = ("copy or download it again (bash download_pretrained_checkpoints.sh for the GPT-2 bases); "
            "an adapter file can be re-trained (gpt2_ft.py --resume WORK_DIR continues from resume.pt)")
ADAPTER_FIX = "copy it again, or re-train it (gpt2_ft.py --resume WORK_DIR continues the run from its resume.pt)"

log = get_logger(__name__)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a ``.safetensors`` or ``torch.save`` file into a dict (CPU), with one-line errors; a
    file of ours (adapter or ``--save_full``) has its content checksum and keys checked too."""
    ckpt = read_file(path, READ_FIX, missing="run `bash download_pretrained_checkpoints.sh` or fix the path")
    if ckpt.get("format") == ADAPTER_FORMAT:
        check_sealed(ckpt, path, ADAPTER_FIX)
        check_adapter_schema(ckpt, path)
    return ckpt


def check_adapter_schema(ckpt: dict, source: str | os.PathLike) -> None:
    """The keys and types :func:`save_adapter` writes (older files lack only ``content_sha256``)."""
    check_schema(ckpt, _SCHEMA, source, ADAPTER_FIX)
    payload = "tensors" if "tensors" in ckpt else "model_state_dict"
    check_schema(ckpt, {payload: dict}, source, ADAPTER_FIX)
    check_tensors(ckpt[payload], source, payload, ADAPTER_FIX)
    if "quantised" in ckpt:
        check_schema(ckpt, {"quantised": dict}, source, ADAPTER_FIX)
        check_schema(ckpt["quantised"], _QUANTISED, f"{source} ('quantised')", ADAPTER_FIX)


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
        if is_adapter_key(name):
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
                if k.startswith("transformer.") and not is_adapter_key(k)}
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


def metadata(model: GPT2LMModel, base_path: str | None, base_sha256: str | None) -> dict:
    """The one metadata block written into adapter files, ``resume.pt`` and exports: format
    version, adapter kind and configuration, model card, and the base checkpoint's identity. Files
    carrying it are written through :func:`nola.integrity.seal` (``content_sha256``) and checked
    when read (:func:`read_checkpoint`, :func:`nola.train.resume.load_resume`)."""
    cfg = model.adapter
    return {"version": FORMAT_VERSION, "adapter": adapter_kind(cfg), "config": cfg.to_dict() if cfg else None,
            "model_config": model.config.to_dict(), "base": {"path": base_path, "sha256": base_sha256}}


def check_metadata(meta: dict, cfg: GPT2Config, source: str, base_path: str | None,
                   base_sha256: str | None = None) -> str | None:
    """Check a metadata block against the model card and, when ``base_path`` is given, the base file
    (it must exist and have the recorded SHA-256; ``base_sha256``: its hash if already known).
    Returns the base's SHA-256 (None if unrecorded)."""
    card = meta.get("model_config")
    if card:
        for key in ("n_embd", "n_layer", "n_head", "vocab_size"):
            if card.get(key) != getattr(cfg, key):
                fail(f"{source} was trained with {key}={card.get(key)} (card {card.get('card')}) "
                     f"but --model_card {cfg.card} has {key}={getattr(cfg, key)}: pass the matching --model_card")
    if base_path is None:
        return None
    if not Path(base_path).is_file():
        fail(f"{source}: base checkpoint {base_path!r} not found; pass --base_checkpoint PATH to the GPT-2 "
             f"file it was trained on")
    want = (meta.get("base") or {}).get("sha256")
    if want:
        got = base_sha256 or sha256_file(base_path)
        if got != want:
            fail(f"{base_path}: SHA-256 {got[:12]}... differs from the {want[:12]}... {source} was trained on; "
                 f"use that exact base file")
    return want


def _adapter_meta(model: GPT2LMModel, base_path: str | None, base_sha256: str | None, step: int) -> dict:
    meta = {"format": ADAPTER_FORMAT, **metadata(model, base_path, base_sha256), "step": step}
    if model.nola is not None:
        meta["seeds"] = {role: {"A": list(g.seeds_a), "B": list(g.seeds_b)} for role, g in model.nola.items()}
    return meta


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
            meta["quantised"] = pack_state(state, qbits)
    return atomic_torch_save(seal(meta), path, compact=not full)


def adapter_tensors(ckpt: dict) -> dict[str, torch.Tensor]:
    """The adapter tensors of an adapter file, dequantised to float."""
    return {**ckpt["tensors"], **(unpack_state(ckpt["quantised"]) if "quantised" in ckpt else {})}


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


def adapter_config_from(meta: dict) -> AdapterConfig | None:
    """The adapter configuration recorded in a metadata block (adapter, full or resume file), if any."""
    return adapter_from_dict(meta.get("adapter"), meta.get("config"))
