"""A GGUF file -> a plain ``transformers`` folder in float32: the only code that reads GGUF.

``transformers`` loads and dequantises a GGUF (with the ``gguf`` and ``accelerate`` packages), but
a model loaded that way keeps a GGUF ``quantization_config`` and refuses ``save_pretrained``. So
the dequantised weights are moved, key for key (``strict``), into a fresh model of the same class
built from the same config without that entry, which saves as an ordinary folder; its logits are
those of the GGUF-loaded model (tests/test_smollm2_fetch.py). Everything downstream then loads the
folder with ``from_pretrained(folder)`` and never needs ``gguf``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

CONVERTER_PACKAGES = ("gguf", "accelerate")


def missing_packages() -> list[str]:
    """The packages the conversion needs that are not installed (checked before any download)."""
    return [name for name in CONVERTER_PACKAGES if importlib.util.find_spec(name) is None]


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` to float32 and save model, generation config and tokenizer into ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    plain = type(loaded)(type(loaded.config).from_dict(settings))
    plain.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    plain.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
