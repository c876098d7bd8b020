"""NOLA: LoRA compressed as linear combinations of seeded random bases, for GPT-2 and any model.

``nola.inject(model, nola.NOLAConfig(...), ["q_proj", "v_proj"])`` adapts a PyTorch /
``transformers`` model; ``nola.save_adapter`` / ``nola.load_adapter`` write and read a PEFT-like
folder. ``from nola.peft import NolaConfig`` makes NOLA a method of HF PEFT (``get_peft_model``,
``PeftModel.from_pretrained``, the ``transformers`` ``Trainer``). The names below are imported on
first use, so ``import nola`` does not import torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "NOLAConfig": "nola.config", "LoRAConfig": "nola.config",
    "inject": "nola.adapters", "set_merged": "nola.adapters", "inject_lora": "nola.lora_inject",
    "save_adapter": "nola.hf_adapter", "load_adapter": "nola.hf_adapter",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'nola' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
