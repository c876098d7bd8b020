"""Loading a ``transformers`` causal LM (LLaMA-2) for NOLA / LoRA fine-tuning and evaluation.

``--bits 4`` loads the base in 4-bit NF4 with double quantisation and ``--bits 8`` in LLM.int8
(bitsandbytes, CUDA only), as UCDvision/NOLA's qlora.py does; 16 bits are bf16 with ``--bf16``,
else fp16; 32 bits float32. Every check that can fail runs before any weight is read.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from nola.config import AdapterRequest, LlamaSource, LoRAConfig, NOLAConfig, auto_mode
from nola.errors import fail
from nola.adapters import inject
from nola.lora_inject import inject_lora


# What nola.hf_adapter.load_adapter tells a user whose adapter was trained on another base.
ADAPTER_BASE_FIX = "pass --model_name_or_path the base model the adapter was trained on"


def check_bits(source: LlamaSource, device: str = "auto") -> None:
    """4 and 8 bits need CUDA (``device``: the --device flag) and bitsandbytes: one-line error otherwise."""
    if source.bits not in (4, 8):
        return
    if device == "cpu" or not torch.cuda.is_available():
        fail(f"--bits {source.bits} needs a CUDA GPU (bitsandbytes {'NF4' if source.bits == 4 else 'int8'}); "
             f"no CUDA device is visible: use --bits 16 or --bits 32 on CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        fail(f"--bits {source.bits} needs bitsandbytes: pip install bitsandbytes (or use --bits 16)")


def check_source(source: LlamaSource) -> None:
    """The model folder must hold a config (a hub name is left to transformers)."""
    path = Path(source.model_name_or_path)
    if (path.exists() or source.model_name_or_path.startswith((".", "/"))) and not (path / "config.json").is_file():
        fail(f"--model_name_or_path {path}: no config.json there; give a transformers model folder or a hub name")


def weight_dtype(source: LlamaSource) -> torch.dtype:
    if source.bits == 32:
        return torch.float32
    return torch.bfloat16 if source.bf16 else torch.float16


def load_causal_lm(source: LlamaSource, device: torch.device) -> tuple[nn.Module, object]:
    """(model, tokenizer) from ``source.model_name_or_path`` on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    check_bits(source, device.type)
    check_source(source)
    kwargs: dict = {"dtype": weight_dtype(source)}
    if source.bits in (4, 8):
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if source.bf16 else torch.float32
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=source.bits == 4, load_in_8bit=source.bits == 8, llm_int8_threshold=6.0,
            llm_int8_has_fp16_weight=False, bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=True,
            bnb_4bit_quant_type="nf4")
        kwargs["dtype"] = torch.bfloat16 if source.bf16 else torch.float32
        kwargs["device_map"] = {"": device.index or 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(source.model_name_or_path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source.model_name_or_path)
    except OSError as exc:
        fail(f"--model_name_or_path {source.model_name_or_path}: cannot load it ({str(exc).splitlines()[0]})")
    if source.bits not in (4, 8):
        model.to(device)
    model.config.use_cache = False
    return model, tokenizer


def adapter_config(request: AdapterRequest, device: torch.device) -> NOLAConfig | LoRAConfig:
    """The one adapter the flags ask for (NOLA: bases on the fly on CUDA, kept in memory on CPU)."""
    if request.conflict():
        fail(request.conflict())
    if any(request.nola.get(k) for k in ("qv", "mlp")):
        fail("--nola_qv / --nola_mlp name GPT-2 projections: choose LLaMA projections with --target_modules")
    try:
        if request.wants_lora:
            return LoRAConfig(**request.lora)
        if request.wants_nola:
            return NOLAConfig(**{**request.nola, "mode": auto_mode(device.type)})
    except ValueError as exc:
        fail(str(exc))
    fail("no adapter: give --nola_rank R --nola_num_basis K (NOLA) or --lora_dim R (LoRA)")


def add_adapter(model: nn.Module, cfg: NOLAConfig | LoRAConfig, source: LlamaSource) -> None:
    """Inject ``cfg`` on ``source.targets`` (one-line error for a target the model lacks)."""
    if isinstance(cfg, LoRAConfig) and source.bits in (4, 8):
        fail(f"--lora_dim with --bits {source.bits}: loralib cannot wrap bitsandbytes layers; use --bits 16 "
             f"(LoRA) or NOLA (--nola_rank) on the {source.bits}-bit base")
    try:
        (inject_lora if isinstance(cfg, LoRAConfig) else inject)(model, cfg, source.targets)
    except ValueError as exc:
        fail(f"--target_modules {source.target_modules}: {exc}")


def save_merged(model: nn.Module, tokenizer, out_dir: str | Path) -> Path:
    """Fold ``model``'s adapter into its weights and write a plain ``transformers`` folder (no adapter
    tensors, loadable with ``AutoModelForCausalLM.from_pretrained``), through a temporary folder."""
    from nola.adapters import is_adapter_key, set_merged

    out = Path(out_dir)
    if out.exists():
        fail(f"--output_dir {out} exists: choose a new folder for the merged model")
    set_merged(model, True)
    state = {k: v for k, v in model.state_dict().items() if not is_adapter_key(k)}
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=state)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out)
    return out
