"""GPT-2's hyper-parameters (the model card) and the flag limits that depend on them.

Kept free of torch so that every script can check its flags against the model card before any
heavy import or any work (:func:`check_limits`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from nola.config import BeamSettings
from nola.errors import fail
from nola.train.textio import read_json

CARDS = {
    "gpt2.sm": {"n_embd": 768, "n_layer": 12, "n_head": 12},
    "gpt2.md": {"n_embd": 1024, "n_layer": 24, "n_head": 16},
    "gpt2.lg": {"n_embd": 1280, "n_layer": 36, "n_head": 20},
}
REQUIRED_KEYS = ("n_embd", "n_layer", "n_head")  # the rest default to GPT-2's


@dataclass
class GPT2Config:
    """GPT-2 hyper-parameters, named as in ``transformers``' GPT2Config."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5
    card: str = "gpt2.sm"

    @classmethod
    def from_card(cls, card: str) -> "GPT2Config":
        """``gpt2.sm`` / ``gpt2.md`` / ``gpt2.lg``, or a JSON file with GPT2Config keys (other keys,
        as in a ``transformers`` config.json, are ignored). Every key read must hold a positive
        integer (``layer_norm_epsilon``: a positive number); ``n_embd``, ``n_layer``, ``n_head``
        must be there."""
        if card in CARDS:
            return cls(card=card, **CARDS[card])
        path = Path(card)
        if not path.is_file():
            raise ValueError(f"--model_card {card!r}: not one of {sorted(CARDS)} and no such JSON file")
        raw = read_json(path, "--model_card")
        if not isinstance(raw, dict):
            raise ValueError(f"--model_card {card}: expected a JSON object of GPT2Config keys "
                             f"({', '.join(REQUIRED_KEYS)}, ...), got a {type(raw).__name__}")
        missing = [key for key in REQUIRED_KEYS if key not in raw]
        if missing:
            raise ValueError(f"--model_card {card}: missing {', '.join(missing)}; a card needs "
                             f"{', '.join(REQUIRED_KEYS)} (vocab_size, n_positions default to GPT-2's)")
        known = {f.name for f in fields(cls)} - {"card"}
        values = {k: v for k, v in raw.items() if k in known}
        for key, value in values.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = (number and math.isfinite(value) and value > 0) if key == "layer_norm_epsilon" else (
                type(value) is int and value > 0)
            if not ok:
                kind = "a positive number" if key == "layer_norm_epsilon" else "a positive integer"
                raise ValueError(f"--model_card {card}: {key}={value!r} must be {kind}")
        cfg = cls(card=str(path), **values)
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"--model_card {card}: n_embd={cfg.n_embd} is not divisible by n_head={cfg.n_head}")
        return cfg

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def card_config(card: str) -> GPT2Config:
    """:meth:`GPT2Config.from_card` with a one-line error for a bad card."""
    try:
        return GPT2Config.from_card(card)
    except ValueError as exc:
        fail(str(exc))


def check_limits(cfg: GPT2Config, seq_len: int, beam: BeamSettings | None = None) -> None:
    """Flags that must fit the model: ``--seq_len`` within ``n_positions``; when decoding, room for
    context (``--eval_len`` below ``--seq_len``), ``--beam`` at most the vocabulary (a beam keeps
    that many distinct continuations) and every ``--eos_token_id`` a token."""
    if seq_len > cfg.n_positions:
        fail(f"--seq_len {seq_len}: the model card {cfg.card} has n_positions={cfg.n_positions}; "
             f"pass --seq_len {cfg.n_positions} or less")
    if beam is None:
        return
    if beam.eval_len >= seq_len:
        fail(f"--eval_len {beam.eval_len}: must be below --seq_len {seq_len} so that some context fits "
             f"(context room = seq_len - eval_len)")
    if beam.beam > cfg.vocab_size:
        fail(f"--beam {beam.beam}: wider than the vocabulary ({cfg.vocab_size} tokens of model card {cfg.card}); "
             f"use a smaller beam")
    bad = [t for t in beam.eos_ids if t >= cfg.vocab_size]
    if bad:
        fail(f"--eos_token_id {bad[0]}: not a token of model card {cfg.card} (vocabulary [0, {cfg.vocab_size})); "
             f"pass an id below {cfg.vocab_size}")
