"""The NOLA tuner layer: a projection (``nn.Linear`` or GPT-2's ``Conv1D``) with NOLA adapters.

Each layer owns its coefficients — ``nola_alpha[adapter]`` and ``nola_beta[adapter]``, ``k``
numbers each — and refers to its *role* (:class:`NolaRole`: the seeded bases of all layers that
share its name and shape). The role mixes the coefficients of all its layers in one product per
factor (:class:`nola.layers.NOLABasis`, the maths ``nola.inject`` uses too), so a forward pass costs
one mixture per role, not one per layer as VeRA's layer-by-layer work would.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from nola.adapters import projection_layout
from nola.config import NOLAConfig
from nola.layers import NOLABasis, check_mergeable


class NolaRole(NOLABasis):
    """The bases of one role of one adapter, and its layers in role order (not submodules: the
    model owns them). :meth:`factors` stacks the layers' α / β and mixes all of them at once."""

    def __init__(self, role: str, num_layers: int, d_in: int, d_out: int, cfg: NOLAConfig) -> None:
        super().__init__(role, num_layers, d_in, d_out, cfg)
        self.layers: list[Optional[NolaLayer]] = [None] * num_layers
        self.adapter_name = ""

    def factors(self, index: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A ``(L, d_in, r)`` and s·B ``(L, r, d_out)`` of every layer of the role, kept while the
        coefficients of layer ``index`` (default: of all layers) are unchanged."""
        name = self.adapter_name

        def coefficients() -> tuple[torch.Tensor, ...]:
            return (tuple(layer.nola_alpha[name] for layer in self.layers)
                    + tuple(layer.nola_beta[name] for layer in self.layers))

        def mix() -> tuple[torch.Tensor, torch.Tensor]:
            both = coefficients()
            return self.factors_of(torch.stack(both[:self.num_layers]), torch.stack(both[self.num_layers:]))

        if index is None:
            watch = coefficients()
        else:
            layer = self.layers[index]
            watch = (layer.nola_alpha[name], layer.nola_beta[name])
        return self.shared_factors(coefficients, mix, watch)


class NolaLayer(BaseTunerLayer):
    """What every NOLA tuner layer holds: per adapter, α, β and (role, index in the role)."""

    adapter_layer_names = ("nola_alpha", "nola_beta")
    other_param_names = ("nola_role",)

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        self.nola_alpha = nn.ParameterDict({})
        self.nola_beta = nn.ParameterDict({})
        self.nola_role: dict[str, tuple[NolaRole, int]] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        layout = projection_layout(self.get_base_layer())
        if layout is None:
            raise TypeError(f"NOLA adapts nn.Linear and transformers' Conv1D, not {type(self.get_base_layer())}")
        self.in_features, self.out_features, self.weight_in_out = layout
        self.kwargs = kwargs

    def update_layer(self, adapter_name: str, role: NolaRole, index: int, inference_mode: bool = False,
                     **kwargs: Any) -> None:
        """Add adapter ``adapter_name``: layer ``index`` of ``role``, α = β = 1/k (as ``nola.inject``)."""
        k = role.num_basis
        self.nola_alpha[adapter_name] = nn.Parameter(torch.full((k,), 1.0 / k))
        self.nola_beta[adapter_name] = nn.Parameter(torch.full((k,), 1.0 / k))
        self.nola_role[adapter_name] = (role, index)
        role.layers[index] = self
        role.adapter_name = adapter_name
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def nola_delta(self, x: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """``(x A) (s·B)`` of this layer for ``adapter_name``."""
        role, index = self.nola_role[adapter_name]
        return role.project(x, *role.factors(index), index)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """ΔW = s·A·B in the base weight's layout (out × in for ``nn.Linear``, in × out for ``Conv1D``)."""
        role, index = self.nola_role[adapter_name]
        a, b = role.factors(index)
        delta = a[index] @ b[index]
        return delta if self.weight_in_out else delta.t()


class Linear(nn.Module, NolaLayer):
    """NOLA on a dense projection (``nn.Linear``, a bitsandbytes linear for unmerged use, ``Conv1D``)."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, role: NolaRole, index: int, **kwargs: Any) -> None:
        super().__init__()
        NolaLayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, role, index)

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        """Fold the active (or the named) adapters into the base weight; refused for 4/8-bit weights."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        weight = self.get_base_layer().weight
        for name in adapter_names:
            if name not in self.nola_alpha:
                continue
            check_mergeable(weight, f"NOLA adapter {name!r}")
            with torch.no_grad():
                delta = self.get_delta_weight(name).to(weight.device, weight.dtype)
                if safe_merge and not torch.isfinite(weight + delta).all():
                    raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
                weight += delta
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Take every merged adapter out of the base weight again."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.")
            return
        weight = self.get_base_layer().weight
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self.nola_alpha:
                with torch.no_grad():
                    weight -= self.get_delta_weight(name).to(weight.device, weight.dtype)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if self.merged:
            return result
        for name in self.active_adapters:
            if name in self.nola_alpha:
                result = result + self.nola_delta(x, name)
        return result

    def __repr__(self) -> str:
        return "nola." + super().__repr__()
