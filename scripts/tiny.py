"""Small random GPT-2 checkpoints made with ``transformers``, for the demo and the tests.

The folder gets what a user downloading GPT-2 would hold: ``config.json`` (usable as
``--model_card``), ``model.safetensors`` as ``save_pretrained`` writes it, and
``pytorch_model.bin`` in the published layout (no ``transformer.`` prefix, causal-mask buffers).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch


def save_random_gpt2(out_dir: str | Path, n_embd: int = 32, n_layer: int = 2, n_head: int = 4,
                     n_positions: int = 256, vocab_size: int = 50257, seed: int = 0) -> Path:
    """Write a random GPT-2 to ``out_dir``; return the folder."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(out)
    published = {k.removeprefix("transformer."): v.clone() for k, v in model.state_dict().items()
                 if k != "lm_head.weight"}
    causal = torch.tril(torch.ones(n_positions, n_positions, dtype=torch.bool)).view(1, 1, n_positions, n_positions)
    for i in range(n_layer):
        published[f"h.{i}.attn.bias"] = causal
    torch.save(published, out / "pytorch_model.bin")
    card = {"n_embd": n_embd, "n_layer": n_layer, "n_head": n_head, "n_positions": n_positions,
            "vocab_size": vocab_size}
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    return out
