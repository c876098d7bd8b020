"""Put NOLA on the projections of any PyTorch / ``transformers`` model, and take it off again.

:func:`inject` finds the target projections (``nn.Linear``, or GPT-2's ``Conv1D`` whose weight is
stored in × out), groups them by role and shape, and gives every group one :class:`NOLAGroup`
(α, β of all its layers; one basis per role shared by all layers unless ``seed_per_layer``) under
``model.nola``. Each projection gets a :class:`NOLASlot` (through a forward hook, adding its layer's
delta to its output columns), and the model a forward pre-hook that mixes every group's factors
once per call. The forked GPT-2 of :mod:`nola.model` is adapted by this same function.

Targets are module names: a leaf name (``q_proj``, ``query``, ...) adapts every module with that
name; the roles of :data:`GPT2_ROLES` and :data:`TIMM_VIT_ROLES` name a slice of a fused projection
(``attn_q`` is the first third of GPT-2's ``attn.c_attn`` outputs, ``qkv_v`` the last third of a
timm ViT's ``attn.qkv``).
"""
from __future__ import annotations

from typing import NamedTuple

from torch import nn

from nola.config import AdapterConfig, NOLAConfig
from nola.layers import NOLAGroup, NOLASlot, set_lora_merged

# role -> (module path suffix, part of the output, number of equal parts)
GPT2_ROLES = {
    "attn_q": ("attn.c_attn", 0, 3),
    "attn_v": ("attn.c_attn", 2, 3),
    "mlp_fc": ("mlp.c_fc", 0, 1),
    "mlp_proj": ("mlp.c_proj", 0, 1),
}
# The same for timm's VisionTransformer blocks (``blocks.N``): q and v are the first and last thirds of
# the fused ``attn.qkv`` (nn.Linear, output ordered q, k, v as timm's Attention reshapes it).
TIMM_VIT_ROLES = {
    "qkv_q": ("attn.qkv", 0, 3),
    "qkv_v": ("attn.qkv", 2, 3),
    "mlp_fc1": ("mlp.fc1", 0, 1),
    "mlp_fc2": ("mlp.fc2", 0, 1),
}
ROLES = {**GPT2_ROLES, **TIMM_VIT_ROLES}
ADAPTER_PREFIX = "nola."


class AdapterSpec(NamedTuple):
    """What was injected into a model (``model.adapter_spec``): enough to inject it again."""

    config: AdapterConfig
    target_modules: tuple[str, ...]


def gpt2_targets(cfg: NOLAConfig) -> list[str]:
    """The paper's GPT-2 targets: ``--nola_qv`` (query, value) and/or ``--nola_mlp``."""
    return (["attn_q", "attn_v"] if cfg.qv else []) + (["mlp_fc", "mlp_proj"] if cfg.mlp else [])


def is_adapter_key(name: str) -> bool:
    """Whether a parameter / state-dict name belongs to an adapter (NOLA α/β or loralib's A/B)."""
    name = name.removeprefix("module.")
    return name.startswith(ADAPTER_PREFIX) or "lora_" in name


def _layout(module: nn.Module) -> tuple[int, int, bool] | None:
    """(d_in, d_out, weight stored in × out) of a projection, or None for other modules."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, False
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and weight is not None and weight.dim() == 2:
        return weight.shape[0], weight.shape[1], True
    return None


def find_targets(model: nn.Module, targets: list[str]) -> dict[str, list[tuple[nn.Module, slice, int, int, bool]]]:
    """Role -> [(module, output columns, d_in, d_out, weight in × out)] in module order.

    A target whose modules differ in shape becomes one role per shape (``name_<in>x<out>``)."""
    found: dict[str, list] = {}
    for target in targets:
        suffix, part, parts = ROLES.get(target, (target, 0, 1))
        by_shape: dict[tuple[int, int], list] = {}
        for name, module in model.named_modules():
            layout = None if not (name == suffix or name.endswith("." + suffix)) else _layout(module)
            if layout is None:
                continue
            d_in, d_out, in_out = layout
            if d_out % parts:
                raise ValueError(f"target {target!r}: {name} has {d_out} outputs, not {parts} equal parts")
            width = d_out // parts
            cols = slice(None) if parts == 1 else slice(part * width, (part + 1) * width)
            by_shape.setdefault((d_in, width), []).append((module, cols, d_in, width, in_out))
        if not by_shape:
            raise ValueError(f"target {target!r} matches no nn.Linear or Conv1D in {type(model).__name__}; "
                             f"check the module names (model.named_modules())")
        for (d_in, d_out), members in by_shape.items():
            role = target if len(by_shape) == 1 else f"{target}_{d_in}x{d_out}"
            found[role] = members
    return found


def inject(model: nn.Module, cfg: NOLAConfig, target_modules: list[str],
           group_cls: type[NOLAGroup] = NOLAGroup, refresh_on: nn.Module | None = None) -> nn.ModuleDict:
    """Adapt ``target_modules`` of ``model`` with NOLA; freeze everything but α and β.

    The groups (``group_cls``: a variant of how the factors are mixed, for benchmarks) are
    registered as ``model.nola`` (state-dict keys ``nola.<role>.alpha`` / ``.beta``) and built on the
    device of the adapted weights (so bases materialise there, and cost nothing on ``meta``); the
    model records ``adapter_spec``. A forward pre-hook on ``refresh_on`` (default: ``model``), the
    module every forward pass goes through, mixes all factors once per pass. Returns the groups."""
    if hasattr(model, "nola") and isinstance(model.nola, nn.ModuleDict):
        raise ValueError(f"{type(model).__name__} already carries NOLA adapters")
    if not target_modules:
        raise ValueError("NOLA needs target modules, e.g. ['q_proj', 'v_proj']")
    groups = nn.ModuleDict()
    for role, members in find_targets(model, list(target_modules)).items():
        _, _, d_in, d_out, _ = members[0]
        with members[0][0].weight.device:
            group = group_cls(role, len(members), d_in, d_out, cfg)
        for index, (module, cols, _, _, in_out) in enumerate(members):
            NOLASlot(module, group, index, cols, in_out)
        groups[role] = group
    model.nola = groups
    model.adapter_spec = AdapterSpec(cfg, tuple(target_modules))
    (refresh_on or model).register_forward_pre_hook(lambda module, inputs: _refresh(groups))
    freeze_base(model)
    return groups


def _refresh(groups: nn.ModuleDict) -> None:
    for group in groups.values():
        group.refresh()


def freeze_base(model: nn.Module) -> None:
    """Only adapter tensors train; a model without any adapter trains whole."""
    names = [n for n, _ in model.named_parameters()]
    has_adapter = any(is_adapter_key(n) for n in names)
    for name, param in model.named_parameters():
        param.requires_grad_(is_adapter_key(name) or not has_adapter)


def adapter_state(model: nn.Module) -> dict:
    """Only the trained adapter tensors (NOLA α/β or LoRA A/B), by state-dict name."""
    return {k: v for k, v in model.state_dict().items() if is_adapter_key(k)}


def set_merged(model: nn.Module, merged: bool) -> None:
    """Fold every adapter's ΔW into its frozen weight (``merged``), or take it out again."""
    groups = getattr(model, "nola", None)
    if isinstance(groups, nn.ModuleDict):
        for group in groups.values():
            group.set_merged(merged)
    for module in model.modules():
        if hasattr(module, "lora_A") and hasattr(module, "merged"):
            set_lora_merged(module, merged)


def is_merged(model: nn.Module) -> bool:
    groups = getattr(model, "nola", None)
    if isinstance(groups, nn.ModuleDict) and len(groups):
        return next(iter(groups.values())).merged
    return any(getattr(m, "merged", False) for m in model.modules() if hasattr(m, "lora_A"))
