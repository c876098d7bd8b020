"""``NolaModel``: the PEFT tuner that puts NOLA on a model (``get_peft_model(base, NolaConfig(...))``).

Before an adapter's layers are made, :meth:`NolaModel._plan` finds its target projections and
splits them into roles (leaf name, then shape: ``q_proj``, or ``k_proj_32x16`` when one name has two
shapes — the roles ``nola.inject`` makes for the same targets, so both give the same bases from the
same seed). The roles' bases live here, in ``nola_bases[adapter][role]`` (buffers that are never
saved); the layers hold only α and β.

What ``save_pretrained`` writes goes through PEFT's state-dict hooks of the method
(:meth:`_get_adapter_state_dict` / :meth:`_remap_adapter_state_dict_for_load`): α and β of every
layer, or with qNOLA one b-bit code stream and the per-vector scales. Loading is strict: a missing
or unexpected coefficient, a wrong shape or another base model is a :class:`nola.errors.NOLAError`,
not PEFT's warning.
"""
from __future__ import annotations

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn

from nola.adapters import projection_layout
from nola.errors import fail
from nola.hf_adapter import base_identity, check_base
from nola.peft.config import NolaConfig
from nola.peft.layer import Linear, NolaLayer, NolaRole
from nola.quant import pack_state, unpack_state

CODES_KEY, SCALES_KEY = "nola_codes", "nola_scales"  # qNOLA's payload in adapter_model.safetensors


def _is_nola_key(key: str) -> bool:
    """A NOLA entry of a model or checkpoint state dict (``...q_proj.nola_alpha[.adapter]``, the packed codes)."""
    return any(part.startswith(NolaModel.prefix) for part in key.split("."))


class NolaModel(BaseTuner):
    """NOLA adapters on a ``transformers`` (or any PyTorch) model; see :class:`NolaConfig`.

    Example::

        from nola.peft import NolaConfig   # registers "nola" with PEFT
        from peft import get_peft_model
        model = get_peft_model(base, NolaConfig(r=8, num_basis=1024, target_modules=["q_proj", "v_proj"]))
    """

    prefix: str = "nola_"
    tuner_layer_cls = NolaLayer
    target_module_mapping = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    uses_shared_state: bool = True

    def _pre_injection_hook(self, model: nn.Module, config: NolaConfig, adapter_name: str) -> None:
        if "nola_bases" not in self._modules:
            self.nola_bases = nn.ModuleDict()
            self._nola_plans: dict[str, dict[str, tuple[NolaRole, int]]] = {}

    def _post_injection_hook(self, model: nn.Module, config: NolaConfig, adapter_name: str) -> None:
        # PeftModel calls this tuner, generate() the inner model: both mix before any layer runs
        self._premix_hooks = [module.register_forward_pre_hook(lambda module, inputs: self._premix())
                              for module in (self, self.model)]

    def _premix(self) -> None:
        """Mix every role of the active adapters before the layers run (see
        :meth:`nola.adapters.NOLAAdapters.premix`: non-reentrant checkpointing needs it)."""
        for name in self.active_adapters:
            for role in self.nola_bases[name].values() if name in self.nola_bases else ():
                first = role.layers[0]
                if not (first.disable_adapters or first.merged):
                    role.factors()

    def _unload_and_optionally_merge(self, *args, **kwargs) -> nn.Module:
        for hook in self._premix_hooks:
            hook.remove()
        return super()._unload_and_optionally_merge(*args, **kwargs)

    def _check_base(self, config: NolaConfig) -> None:
        """Record the base's identity in a new adapter's config; refuse a saved one on another base."""
        have = base_identity(self.model)
        want = config.base_model_identity
        if want is None:
            config.base_model_identity = {"class": have["class"], "config_sha256": have["config_sha256"]}
        else:
            check_base(want, have, "NOLA adapter", "load it onto the base model it was trained on")

    def _plan(self, config: NolaConfig, adapter_name: str) -> dict[str, tuple[NolaRole, int]]:
        """Module key -> (role, index in the role) for every target of a new adapter."""
        self._check_base(config)
        by_leaf: dict[str, dict[tuple[int, int], list[str]]] = {}
        for key, module in self.model.named_modules():
            if not self._check_target_module_exists(config, key):
                continue
            base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
            layout = projection_layout(base)
            if layout is None:
                continue
            by_leaf.setdefault(key.rpartition(".")[2], {}).setdefault(layout[:2], []).append(key)
        cfg, roles, plan = config.to_nola(), nn.ModuleDict(), {}
        for leaf, shapes in by_leaf.items():
            for (d_in, d_out), keys in shapes.items():
                name = leaf if len(shapes) == 1 else f"{leaf}_{d_in}x{d_out}"
                with self.model.get_submodule(keys[0]).weight.device:
                    roles[name] = NolaRole(name, len(keys), d_in, d_out, cfg)
                plan.update({key: (roles[name], index) for index, key in enumerate(keys)})
        self.nola_bases[adapter_name] = roles
        self._nola_plans[adapter_name] = plan
        return plan

    def _create_and_replace(self, nola_config: NolaConfig, adapter_name: str, target: nn.Module,
                            target_name: str, parent: nn.Module, current_key: str, **optional_kwargs) -> None:
        plan = self._nola_plans.get(adapter_name) or self._plan(nola_config, adapter_name)
        if current_key not in plan:
            raise TypeError(f"NOLA adapts nn.Linear and transformers' Conv1D; {current_key} is a {type(target)}")
        role, index = plan[current_key]
        if isinstance(target, NolaLayer):
            target.update_layer(adapter_name, role, index)
            return
        new_module = Linear(target, adapter_name, role, index)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)  # an added adapter is not trainable until set_adapter
        self._replace_module(parent, target_name, new_module, target)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        del self.nola_bases[adapter_name]
        del self._nola_plans[adapter_name]

    # --- what save_pretrained writes and from_pretrained / load_adapter read -------------------

    @classmethod
    def _get_adapter_state_dict(cls, model, config, adapter_name, state_dict, unwanted_adapter_names):
        """α and β of every layer; with qNOLA instead one packed b-bit code stream and the scales,
        over the coefficients in the order of their checkpoint keys (which :meth:`_remap_...` rebuilds)."""
        ours = super()._get_adapter_state_dict(model, config, adapter_name, state_dict, unwanted_adapter_names)
        if config.qbits is None:
            return ours
        ordered = sorted(ours, key=lambda k: cls._remove_adapter_name_from_key(k, adapter_name))
        packed = pack_state({k: ours[k] for k in ordered}, config.qbits)
        return {CODES_KEY: packed["codes"], SCALES_KEY: packed["scale"]}

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        state = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        expected = {k: v for k, v in model.state_dict().items() if _is_nola_key(k) and k.endswith(f".{adapter_name}")}
        if config.qbits is not None:
            state = cls._unpack(state, expected, config, adapter_name)
        found = {k for k in state if _is_nola_key(k)}
        missing, unexpected = sorted(set(expected) - found), sorted(found - set(expected))
        if missing or unexpected:
            fail(f"NOLA adapter {adapter_name!r}: the checkpoint's coefficients differ from the model's "
                 f"(missing {missing[:3]}, unexpected {unexpected[:3]}): load it onto the base model and "
                 f"targets it was saved with")
        for key, tensor in expected.items():
            if state[key].shape != tensor.shape:
                fail(f"NOLA adapter {adapter_name!r}: {key} has shape {tuple(state[key].shape)}, the model "
                     f"expects {tuple(tensor.shape)}: load it onto the base model it was saved from")
        return state

    @classmethod
    def _unpack(cls, state: dict, expected: dict, config: NolaConfig, adapter_name: str) -> dict:
        """Replace the packed codes by the dequantised α / β of every expected key."""
        if CODES_KEY not in state or SCALES_KEY not in state:
            fail(f"NOLA adapter {adapter_name!r}: a {config.qbits}-bit qNOLA checkpoint holds "
                 f"{CODES_KEY!r} and {SCALES_KEY!r}; found {sorted(state)[:4]}: save the adapter again")
        ordered = sorted(expected, key=lambda k: cls._remove_adapter_name_from_key(k, adapter_name))
        codes, scales = state.pop(CODES_KEY), state.pop(SCALES_KEY)
        try:
            values = unpack_state({"names": ordered, "shapes": [list(expected[k].shape) for k in ordered],
                                   "bits": config.qbits, "codes": codes, "scale": scales})
        except (ValueError, RuntimeError) as exc:
            fail(f"NOLA adapter {adapter_name!r}: the packed codes do not fit this model's coefficients "
                 f"({exc}): load it onto the base model and targets it was saved with")
        if scales.numel() != len(ordered):
            fail(f"NOLA adapter {adapter_name!r}: {scales.numel()} scales for {len(ordered)} coefficient "
                 f"vectors: load it onto the base model and targets it was saved with")
        return {**state, **values}
