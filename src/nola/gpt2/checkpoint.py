"""Checkpoint I/O of the GPT-2 fork: base weights in every published layout, the adapter of each save,
full state dicts, and the adapter files earlier versions wrote.

A save (:func:`save_checkpoint`) writes the one adapter format, the folder of :mod:`nola.hf_adapter`
(``model.<step>/``: ``adapter_config.json`` + ``adapter_model.safetensors``) with only what NOLA says
must be stored: the coefficients (b-bit packed when quantised), the adapter configuration (seeds
included), the step, and the base identified as a file (:func:`gpt2_base`: path + SHA-256, with the
model card). ``--save_full`` writes ``model.<step>.pt``, a full state dict under ``model_state_dict``
as microsoft/LoRA's scripts wrote it plus the metadata block, sealed with a content checksum
(:mod:`nola.integrity`). :func:`read_checkpoint` reads these, base files, and the pickled adapter
files (``model.<step>.pt``: ``tensors`` or a packed ``quantised`` block) of earlier versions, into one
shape: the metadata block plus the adapter ``tensors``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from nola.errors import fail
from nola.fileio import atomic_torch_save, sha256_file
from nola.hf_adapter import (CONFIG_FILE, WEIGHTS_FILE, check_base, file_identity, folder_bytes, read_adapter,
                             save_adapter)
from nola.integrity import check_schema, check_sealed, check_tensors, read_file, seal
from nola.config import AdapterConfig, adapter_from_dict, adapter_kind
from nola.adapters import is_adapter_key
from nola.log import get_logger
from nola.gpt2.model import GPT2Config, GPT2LMModel, redraw_tied_head
from nola.quant import unpack_state
from nola.train.cache import building

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
BASE_FIX = "pass --base_checkpoint PATH to the exact GPT-2 file it was trained on (its SHA-256 must match)"

log = get_logger(__name__)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load an adapter folder, or a ``.safetensors`` or ``torch.save`` file, into a dict (CPU), with
    one-line errors; a file of ours (adapter or ``--save_full``) has its content checksum and keys
    checked too. An adapter, folder or file, comes as the metadata block plus ``tensors``."""
    path = adapter_folder_for(Path(path))
    if any((path / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE)):
        return read_adapter_folder(path)
    ckpt = read_file(path, READ_FIX, missing="run `bash download_pretrained_checkpoints.sh` or fix the path")
    if ckpt.get("format") == ADAPTER_FORMAT:
        check_sealed(ckpt, path, ADAPTER_FIX)
        check_adapter_schema(ckpt, path)
    return ckpt


def adapter_folder_for(path: Path) -> Path:
    """The paper's commands name ``model.<step>.pt``; ``gpt2_ft.py`` saves that adapter as the folder
    ``model.<step>/``. A ``.pt`` path that is not there while its folder is means the folder (said in
    one log line); any other path is itself."""
    folder = path.with_suffix("") if path.suffix == ".pt" else None
    if folder is None or path.exists() or not (folder / CONFIG_FILE).is_file():
        return path
    log.info("%s: no such file; reading the adapter folder %s/ that gpt2_ft.py saved for it", path, folder)
    return folder


def read_adapter_folder(folder: str | os.PathLike) -> dict:
    """An adapter folder of the GPT-2 fork (:func:`save_checkpoint`) as the metadata block plus
    ``tensors`` (qNOLA dequantised), the shape an adapter file read by :func:`read_checkpoint` has;
    its base identity is checked where the base is known (:func:`check_metadata`)."""
    header, tensors = read_adapter(folder)
    base = header["base_model"]
    kind = base.get("kind", "config")  # folders of transformers models carry no kind (hf_adapter)
    if kind != "file" or not isinstance(base.get("model_config"), dict):
        fail(f"{folder}: an adapter for a {base.get('class') or 'model'} identified by its {kind}, "
             f"not for the GPT-2 fork: load it onto that model (nola.load_adapter; llama_beam.py --adapter)")
    return {"format": ADAPTER_FORMAT, "version": FORMAT_VERSION, "adapter": header["adapter"],
            "config": header["config"], "model_config": base["model_config"],
            "base": {"path": base.get("path"), "sha256": base.get("sha256")}, "step": int(header.get("step") or 0),
            "tensors": tensors}


def check_adapter_schema(ckpt: dict, source: str | os.PathLike) -> None:
    """The keys and types of a pickled adapter (or ``--save_full``) file: ``model.<step>.pt`` as earlier
    versions wrote adapters and ``--save_full`` still writes (the oldest lack only ``content_sha256``)."""
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
    """The one metadata block written into ``resume.pt``, full checkpoints and exports (and read from
    adapter folders and earlier versions' adapter files, :func:`read_checkpoint`): format
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
    recorded = meta.get("base") or {}
    want = recorded.get("sha256")
    if want:
        got = base_sha256 or sha256_file(base_path)
        check_base(file_identity(recorded.get("path"), want), file_identity(base_path, got), source, BASE_FIX)
    return want


def gpt2_base(model: GPT2LMModel, base_path: str | None, base_sha256: str | None) -> dict:
    """The fork's base identity for an adapter folder: the base file (path + SHA-256; None for a
    random GPT-2) and the model card it was built with."""
    return file_identity(base_path, base_sha256, model_config=model.config.to_dict())


def save_checkpoint(model: GPT2LMModel, work_dir: str | os.PathLike, base_path: str | None,
                    base_sha256: str | None, step: int, full: bool = False) -> tuple[Path, int]:
    """One save of ``gpt2_ft.py`` in ``work_dir``: the adapter folder ``model.<step>/`` (built beside it
    and renamed, so a killed save leaves none), or with ``full`` the full state dict ``model.<step>.pt``
    plus the metadata block. Returns the path and its bytes."""
    work_dir = Path(work_dir)
    if full:
        path = work_dir / f"model.{step}.pt"
        meta = {"format": ADAPTER_FORMAT, **metadata(model, base_path, base_sha256), "step": step,
                "model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
        if model.nola is not None:
            meta["seeds"] = {role: {"A": list(g.seeds_a), "B": list(g.seeds_b)} for role, g in model.nola.items()}
        return path, atomic_torch_save(seal(meta), path)
    folder = work_dir / f"model.{step}"
    if folder.exists():  # this step saved by an earlier, interrupted run of this work_dir
        shutil.rmtree(folder)
    with building(folder) as tmp:
        save_adapter(model, tmp, gpt2_base(model, base_path, base_sha256), step)
    return folder, folder_bytes(folder)


def saved_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of a save: an adapter folder's two files, or a checkpoint file."""
    return folder_bytes(path) if Path(path).is_dir() else Path(path).stat().st_size


def adapter_tensors(ckpt: dict) -> dict[str, torch.Tensor]:
    """The adapter tensors of an adapter (folder or earlier version's file), dequantised to float."""
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
