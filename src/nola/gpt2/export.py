"""Export a (merged) model as a ``transformers`` GPT-2 folder: ``config.json`` + ``model.safetensors``.

The adapter deltas are folded into the base weights first, so the folder is a plain GPT-2 that
``GPT2LMHeadModel.from_pretrained(folder)`` loads anywhere; parameter names are already
``transformers``' ones, and the LM head stays tied to the token embedding.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from nola.fileio import atomic_open
from nola.adapters import is_adapter_key
from nola.gpt2.model import GPT2LMModel
from nola.gpt2.tokenizer import EOS_ID


def hf_state_dict(model: GPT2LMModel) -> dict[str, torch.Tensor]:
    """The GPT-2 weights with every adapter merged in (adapter tensors themselves left out)."""
    model.merge_adapters()
    return {name: tensor.detach().to("cpu", torch.float32).contiguous().clone()
            for name, tensor in model.state_dict().items()
            if name.startswith("transformer.") and not is_adapter_key(name)}


def hf_config(model: GPT2LMModel, provenance: dict | None = None) -> dict:
    """``config.json`` for ``GPT2LMHeadModel``; ``provenance`` is recorded under ``nola_export``."""
    from transformers import GPT2Config as HFConfig

    cfg = model.config
    extra = {"nola_export": provenance} if provenance else {}
    hf = HFConfig(vocab_size=cfg.vocab_size, n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                  n_head=cfg.n_head, layer_norm_epsilon=cfg.layer_norm_epsilon, activation_function="gelu_new",
                  bos_token_id=EOS_ID, eos_token_id=EOS_ID, tie_word_embeddings=True,
                  architectures=["GPT2LMHeadModel"], **extra)
    return hf.to_dict()


def export_hf(model: GPT2LMModel, out_dir: str | os.PathLike, provenance: dict | None = None) -> Path:
    """Write ``out_dir/config.json`` and ``out_dir/model.safetensors`` (each atomically)."""
    from safetensors.torch import save

    out = Path(out_dir)
    blob = save(hf_state_dict(model), metadata={"format": "pt"})
    with atomic_open(out / "model.safetensors", "wb") as handle:
        handle.write(blob)
    with atomic_open(out / "config.json", "w") as handle:
        handle.write(json.dumps(hf_config(model, provenance), indent=2, sort_keys=True) + "\n")
    return out
