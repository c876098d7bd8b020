"""PEFT's own parameter-efficient methods as baselines on a causal LM, trained by ``llama_ft.py``'s loop.

The methods a user would pick instead of NOLA for "fewer parameters than LoRA rank 1" ship in HF PEFT
(pinned in requirements.lock): VeRA, VB-LoRA, FourierFT and TinyLoRA. ``llama_ft.py --peft_method M
--peft_options 'k=v,...'`` builds PEFT's config for ``M`` with those options on ``--target_modules`` and
trains it on exactly the batches, objective, optimiser and schedule NOLA and LoRA get; the folder it
writes is PEFT's own (``PeftModel.from_pretrained`` reads it), and ``llama_beam.py --adapter`` merges it
into the base before decoding, as it does NOLA's.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from nola.errors import fail

if TYPE_CHECKING:  # torch is imported only once the flags are checked (fast one-line errors)
    from torch import nn

# --peft_method -> the PEFT config class. The projection matrices of VeRA and TinyLoRA are regenerated
# from their seeds unless asked otherwise (as NOLA's bases are), so their adapter files hold what trains.
METHODS = {"vera": "VeraConfig", "vblora": "VBLoRAConfig", "fourierft": "FourierFTConfig",
           "tinylora": "TinyLoraConfig"}
DEFAULTS = {"vera": {"save_projection": False}, "tinylora": {"save_projection": False}}
# Options fixed by the loop, not by the user.
RESERVED = ("target_modules", "task_type", "peft_type", "base_model_name_or_path", "inference_mode")


def require_peft(flag: str) -> None:
    if importlib.util.find_spec("peft") is None:
        fail(f"{flag} needs HF PEFT: pip install -r requirements.lock (it pins peft)")


def peft_config(method: str, options: dict, targets: list[str]):
    """PEFT's config for ``method`` with ``options`` on ``targets`` (one ``error:`` line for an unknown
    method or option, or a value PEFT refuses)."""
    if method not in METHODS:
        fail(f"--peft_method {method}: unknown; choose one of {', '.join(METHODS)}")
    require_peft(f"--peft_method {method}")
    import peft

    cls = getattr(peft, METHODS[method])
    known = {f.name for f in dataclasses.fields(cls)} - set(RESERVED)
    unknown = sorted(set(options) - known)
    if unknown:
        fail(f"--peft_options: {METHODS[method]} has no option {unknown[0]!r}; its options: {', '.join(sorted(known))}")
    try:
        return cls(**{**DEFAULTS.get(method, {}), **options}, target_modules=list(targets), task_type="CAUSAL_LM")
    except (TypeError, ValueError) as exc:
        fail(f"--peft_options for {method}: {str(exc).splitlines()[0]}")


def config_record(config) -> dict:
    """PEFT's config as plain JSON values (its sets of module names become sorted lists)."""
    return json.loads(json.dumps(config.to_dict(), default=lambda v: sorted(v) if isinstance(v, (set, frozenset)) else str(v)))


def add_peft(model: nn.Module, config) -> nn.Module:
    """Wrap ``model`` with PEFT's method; the returned ``PeftModel`` saves the adapter, while
    ``peft_model.base_model.model`` (``model`` itself, with PEFT's layers in place) is what trains."""
    from peft import get_peft_model

    try:
        with warnings.catch_warnings():  # the projections are regenerated from their seed on purpose
            warnings.filterwarnings("ignore", message="Specified to not save")
            return get_peft_model(model, config)
    except ValueError as exc:
        fail(f"--target_modules: {str(exc).splitlines()[0]}")


def save_peft(peft_model: nn.Module, directory: str | os.PathLike) -> None:
    """PEFT's adapter folder files, written beside each other in a temporary folder and then moved in
    (never a half-written pair under the final names)."""
    directory = Path(directory)
    tmp = directory / ".peft.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(tmp)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        os.replace(tmp / name, directory / name)
    shutil.rmtree(tmp)


def is_peft_folder(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds an adapter written by PEFT (its config names a ``peft_type``)."""
    try:
        config = json.loads((Path(directory) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and "peft_type" in config


def merge_peft(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """``model`` with the PEFT adapter in ``directory`` folded into its weights."""
    require_peft(f"--adapter {directory}")
    from peft import PeftModel

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Specified to not save")
            return PeftModel.from_pretrained(model, str(directory)).merge_and_unload()
    except (ValueError, KeyError, RuntimeError) as exc:
        fail(f"--adapter {directory}: PEFT cannot load it onto this model ({str(exc).splitlines()[0]})")
