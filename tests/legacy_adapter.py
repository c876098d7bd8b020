"""The pickled GPT-2 adapter file as ``gpt2_ft.py`` wrote it before the adapter folder (faa6739's
``nola.gpt2.checkpoint.save_adapter``, adapter branch): kept here only to make old files for the tests
that prove they still load. ``tests/fixtures/legacy_gpt2`` holds files that code itself wrote."""
from __future__ import annotations

import os

from nola.fileio import atomic_torch_save
from nola.gpt2.checkpoint import ADAPTER_FORMAT, metadata
from nola.gpt2.model import GPT2LMModel
from nola.integrity import seal
from nola.quant import pack_state


def save_pt_adapter(model: GPT2LMModel, path: str | os.PathLike, base_path: str | None = None,
                    base_sha256: str | None = None, step: int = 0) -> int:
    """Write ``model.<step>.pt`` in the old layout (tensors, or the packed ``quantised`` block); return bytes."""
    meta = {"format": ADAPTER_FORMAT, **metadata(model, base_path, base_sha256), "step": step}
    if model.nola is not None:
        meta["seeds"] = {role: {"A": list(g.seeds_a), "B": list(g.seeds_b)} for role, g in model.nola.items()}
    qbits = model.nola_config.qbits if model.nola_config is not None else None
    state = model.adapter_state()
    meta["tensors"] = {k: v.detach().cpu().clone() for k, v in state.items() if qbits is None}
    if qbits is not None:
        meta["quantised"] = pack_state(state, qbits)
    return atomic_torch_save(seal(meta), path, compact=True)
