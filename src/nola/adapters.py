"""Put NOLA on the projections of any PyTorch / ``transformers`` model, and take it off again.

:func:`inject` finds the target projections (``nn.Linear``, or GPT-2's ``Conv1D`` whose weight is
stored in × out), groups them by role and shape, and gives every group one :class:`NOLAGroup`
(α, β of all its layers; one basis per role shared by all layers unless ``seed_per_layer``) under
``model.nola``. Each projection gets a :class:`NOLASlot` (through a forward hook, adding its layer's
delta to its output columns), and the model a forward pre-hook that mixes every group's factors
once per call. The forked GPT-2 of :mod:`nola.gpt2.model` is adapted by this same function.

Targets are module names: a leaf name (``q_proj``, ``query``, ...) adapts every module with that
name; the roles of :data:`GPT2_ROLES` and :data:`TIMM_VIT_ROLES` name a slice of a fused projection
(``attn_q`` is the first third of GPT-2's ``attn.c_attn`` outputs, ``qkv_v`` the last third of a
timm ViT's ``attn.qkv``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple

from torch import nn

from nola.config import AdapterConfig, NOLAConfig
from nola.errors import fail
from nola.layers import NOLAGroup, NOLASlot

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
# Prefixes that wrappers put before a model's own names: DDP's ``module.`` and torch.compile's ``_orig_mod.``.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class AdapterSpec(NamedTuple):
    """What was injected into a model (``model.adapter_spec``): enough to inject it again."""

    config: AdapterConfig
    target_modules: tuple[str, ...]


def gpt2_targets(cfg: NOLAConfig) -> list[str]:
    """The paper's GPT-2 targets: ``--nola_qv`` (query, value) and/or ``--nola_mlp``."""
    return (["attn_q", "attn_v"] if cfg.qv else []) + (["mlp_fc", "mlp_proj"] if cfg.mlp else [])


def is_adapter_key(name: str) -> bool:
    """Whether a parameter / state-dict name belongs to an adapter (NOLA α/β or loralib's A/B)."""
    while name.startswith(WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name.startswith(ADAPTER_PREFIX) or "lora_" in name


def projection_layout(module: nn.Module) -> tuple[int, int, bool] | None:
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
            layout = None if not (name == suffix or name.endswith("." + suffix)) else projection_layout(module)
            if layout is None:
                continue
            d_in, d_out, in_out = layout
            if d_out % parts:
                fail(f"target {target!r}: {name} has {d_out} outputs, not {parts} equal parts")
            width = d_out // parts
            cols = slice(None) if parts == 1 else slice(part * width, (part + 1) * width)
            by_shape.setdefault((d_in, width), []).append((module, cols, d_in, width, in_out))
        if not by_shape:
            fail(f"target {target!r} matches no nn.Linear or Conv1D in {type(model).__name__}; "
                 f"check the module names (model.named_modules())")
        for (d_in, d_out), members in by_shape.items():
            role = target if len(by_shape) == 1 else f"{target}_{d_in}x{d_out}"
            found[role] = members
    return found


class NOLAAdapters(nn.ModuleDict):
    """What :func:`inject` returns and puts on the model as ``model.nola``: the groups by role
    (state-dict keys ``nola.<role>.alpha`` / ``.beta``) and the switches of the adapter as a whole."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_model", model)  # not a submodule: the model owns this dict

    @property
    def merged(self) -> bool:
        return any(group.merged for group in self.values())

    def merge(self) -> None:
        """Fold every ΔW into its frozen weight (refused for 4/8-bit weights); forward skips the adapter."""
        for group in self.values():
            group.set_merged(True)

    def unmerge(self) -> None:
        """Take every ΔW out of its weight again."""
        for group in self.values():
            group.set_merged(False)

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Within the block the model computes as its base (a merged adapter is taken out first)."""
        merged = self.merged
        self.unmerge()
        for group in self.values():
            group.disabled = True
        try:
            yield
        finally:
            for group in self.values():
                group.disabled = False
            if merged:
                self.merge()

    def unload(self) -> nn.Module:
        """Take the adapter off (hooks, α, β; the weights unmerged) and return the bare model."""
        self.unmerge()
        return self._detach()

    def merge_and_unload(self) -> nn.Module:
        """Fold the adapter into the weights and take it off: a plain model of the base's class."""
        self.merge()
        return self._detach()

    def premix(self) -> None:
        """Mix the factors of every live group now, before the model's layers run: inside a layer
        that non-reentrant gradient checkpointing recomputes, the first mixing would be saved in the
        forward pass but not in the recomputation (which finds the kept factors), and PyTorch
        refuses such a layer. The model's forward pre-hook calls this."""
        for group in self.values():
            if group.live:
                group.current_factors()

    def _detach(self) -> nn.Module:
        model = self._model
        self.premix_hook.remove()
        for group in self.values():
            for slot in group.slots:
                hook = getattr(slot.module, "nola_slots", None)
                if hook is not None:
                    hook.handle.remove()
                    del slot.module.nola_slots
        del model.nola
        model.__dict__.pop("adapter_spec", None)
        return model


def inject(model: nn.Module, cfg: NOLAConfig, target_modules: list[str] | None = None,
           group_cls: type[NOLAGroup] = NOLAGroup) -> NOLAAdapters:
    """Adapt ``target_modules`` (default: ``cfg.target_modules``) of ``model`` with NOLA; freeze
    everything but α and β.

    The groups (``group_cls``: a variant of how the factors are mixed, for benchmarks) are
    registered as ``model.nola`` (state-dict keys ``nola.<role>.alpha`` / ``.beta``) and built on the
    device of the adapted weights (so bases materialise there, and cost nothing on ``meta``); the
    model records ``adapter_spec``. Each group mixes its layers' factors once per forward pass (once
    in all while no gradient is needed), from the model's forward pre-hook or, for a call that
    bypasses the model, at its first layer. Returns the groups, with ``merge`` / ``unmerge`` /
    ``disabled`` / ``unload`` / ``merge_and_unload``."""
    if hasattr(model, "nola") and isinstance(model.nola, nn.ModuleDict):
        fail(f"{type(model).__name__} already carries NOLA adapters: unload them first (model.nola.unload())")
    targets = list(target_modules if target_modules is not None else cfg.target_modules or [])
    if not targets:
        fail("NOLA needs target modules, e.g. NOLAConfig(target_modules=['q_proj', 'v_proj'])")
    groups = NOLAAdapters(model)
    for role, members in find_targets(model, targets).items():
        _, _, d_in, d_out, _ = members[0]
        with members[0][0].weight.device:
            group = group_cls(role, len(members), d_in, d_out, cfg)
        for index, (module, cols, _, _, in_out) in enumerate(members):
            NOLASlot(module, group, index, cols, in_out)
        groups[role] = group
    model.nola = groups
    model.adapter_spec = AdapterSpec(cfg, tuple(targets))
    groups.premix_hook = model.register_forward_pre_hook(lambda module, inputs: groups.premix())
    freeze_base(model)
    return groups


def count_trainable(model: nn.Module) -> int:
    """Number of parameters that receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
            from nola.lora_inject import set_lora_merged  # loralib is imported only where a LoRA layer exists

            set_lora_merged(module, merged)


def is_merged(model: nn.Module) -> bool:
    groups = getattr(model, "nola", None)
    if isinstance(groups, nn.ModuleDict) and len(groups):
        return next(iter(groups.values())).merged
    return any(getattr(m, "merged", False) for m in model.modules() if hasattr(m, "lora_A"))
