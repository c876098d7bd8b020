"""Put loralib's LoRA on the projections of any PyTorch / ``transformers`` model (the baseline).

Targets are found exactly as for NOLA (:func:`nola.adapters.find_targets`). Each adapted
``nn.Linear`` becomes a ``loralib.Linear``; a ``Conv1D`` (weight stored in × out) becomes a
``loralib.Linear`` with ``fan_in_fan_out``, or, when only some parts of a fused projection are
targets (GPT-2's ``attn_q`` / ``attn_v`` of ``c_attn``), a ``loralib.MergedLinear`` whose
``enable_lora`` marks those parts — the layer microsoft/LoRA's GPT-2 uses. The replacement keeps
the original weight and bias tensors; merging goes through :func:`nola.adapters.set_merged`.
"""
from __future__ import annotations

import loralib
import torch
from torch import nn

from nola.config import LoRAConfig
from nola.adapters import AdapterSpec, find_targets, freeze_base


def inject_lora(model: nn.Module, cfg: LoRAConfig, target_modules: list[str]) -> list[str]:
    """Replace the ``target_modules`` of ``model`` by loralib layers; freeze all but LoRA's A and B.

    Returns the names of the replaced modules. The model records ``adapter_spec``."""
    if getattr(model, "adapter_spec", None) is not None:
        raise ValueError(f"{type(model).__name__} already carries adapters")
    if not target_modules:
        raise ValueError("LoRA needs target modules, e.g. ['q_proj', 'v_proj']")
    names = {id(m): n for n, m in model.named_modules()}
    parts: dict[str, tuple[nn.Module, list[slice], bool]] = {}
    for members in find_targets(model, list(target_modules)).values():
        for module, cols, _, _, in_out in members:
            parts.setdefault(names[id(module)], (module, [], in_out))[1].append(cols)
    for name, (module, cols, in_out) in parts.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, _lora_layer(module, cols, in_out, cfg))
    model.adapter_spec = AdapterSpec(cfg, tuple(target_modules))
    freeze_base(model)
    return list(parts)


def _lora_layer(module: nn.Module, cols: list[slice], in_out: bool, cfg: LoRAConfig) -> nn.Module:
    """The loralib layer for ``module`` with LoRA on output columns ``cols``, sharing its tensors."""
    weight = module.weight
    d_in, d_out = weight.shape if in_out else weight.shape[::-1]
    common = dict(r=cfg.dim, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, fan_in_fan_out=in_out,
                  merge_weights=False, bias=module.bias is not None, device=weight.device, dtype=weight.dtype)
    if cols == [slice(None)]:
        layer = loralib.Linear(d_in, d_out, **common)
    else:
        width = cols[0].stop - cols[0].start
        enabled = [slice(i * width, (i + 1) * width) in cols for i in range(d_out // width)]
        layer = loralib.MergedLinear(d_in, d_out, enable_lora=enabled, **common)
    layer.weight = weight
    layer.bias = module.bias
    return layer


def lora_delta(layer: loralib.LoRALayer) -> torch.Tensor:
    """loralib's ΔW of ``layer`` in its weight's layout (scaling included)."""
    if isinstance(layer, loralib.MergedLinear):
        return layer.merge_AB() * layer.scaling
    delta = layer.lora_B @ layer.lora_A * layer.scaling
    return delta.t() if layer.fan_in_fan_out else delta


@torch.no_grad()
def set_lora_merged(layer: loralib.LoRALayer, merged: bool) -> None:
    """Fold loralib's ΔW into its weight (or out again). ``merged`` is loralib's own switch that its
    forward reads; setting it here, once, keeps loralib's forward from adding ΔW a second time."""
    if merged == layer.merged:
        return
    sign = 1.0 if merged else -1.0
    layer.weight += sign * lora_delta(layer).to(layer.weight.dtype)
    layer.merged = merged
