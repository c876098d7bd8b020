"""The NOLA adapter and the LoRA baseline behind one interface.

For a frozen projection ``y = x W (+ b)`` NOLA adds ``s · (x A) B`` with
``A = Σᵢ αᵢ Aᵢ`` (d_in × r) and ``B = Σⱼ βⱼ Bⱼ`` (r × d_out), ``s = c / r``. The bases Aᵢ, Bⱼ are
frozen uniform random matrices regenerated from integer seeds (:mod:`nola.basis`); α and β are the
only trainable tensors. All L layers that share one *role* (e.g. the query projection) are one
:class:`NOLAGroup`: α is an ``(L, k)`` matrix, so the L mixtures are a single product
``(L × k)·(k × d_in·r)`` that reads the basis once per step instead of L times.

Two execution modes with the same numbers: ``materialised`` keeps each basis in memory (generated
once); ``onthefly`` keeps nothing and regenerates the basis in row chunks inside a custom autograd
function, in forward and again in backward.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from nola.basis import basis_seed, uniform_rows
from nola.config import NOLAConfig
from nola.errors import fail
from nola.quant import fake_quant

BASIS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def basis_bounds(d_in: int, d_out: int, rank: int) -> tuple[float, float]:
    """Uniform bounds of the A and B bases: 1/√(d_in·r) and 1/√(r·d_out)."""
    return 1.0 / math.sqrt(d_in * rank), 1.0 / math.sqrt(rank * d_out)


class _MixOnTheFly(torch.autograd.Function):
    """``coeff @ basis`` with the basis regenerated chunk by chunk; nothing is saved but ``coeff``'s shape."""

    @staticmethod
    def forward(ctx, coeff, seeds, num_rows, row_size, bound, chunk, basis_dtype):  # type: ignore[override]
        ctx.meta = (seeds, num_rows, row_size, bound, chunk, basis_dtype)
        out = torch.zeros(coeff.shape[0], row_size, dtype=coeff.dtype, device=coeff.device)
        for layer, start, stop, rows in _chunks(ctx.meta, coeff.device, coeff.dtype):
            if layer is None:
                out.addmm_(coeff[:, start:stop], rows)
            else:
                out[layer].unsqueeze(0).addmm_(coeff[layer : layer + 1, start:stop], rows)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        num_rows = ctx.meta[1]
        grad_coeff = torch.empty(grad.shape[0], num_rows, dtype=grad.dtype, device=grad.device)
        for layer, start, stop, rows in _chunks(ctx.meta, grad.device, grad.dtype):
            if layer is None:
                grad_coeff[:, start:stop] = grad @ rows.t()
            else:
                grad_coeff[layer, start:stop] = rows @ grad[layer]
        return grad_coeff, None, None, None, None, None, None


def _chunks(meta, device, dtype):
    """Yield (layer or None, start, stop, basis rows) covering every basis of a factor."""
    seeds, num_rows, row_size, bound, chunk, basis_dtype = meta
    shared = len(seeds) == 1
    for layer, seed in enumerate(seeds):
        for start in range(0, num_rows, chunk):
            stop = min(start + chunk, num_rows)
            rows = uniform_rows(seed, num_rows, row_size, bound, start, stop, device=device, dtype=basis_dtype)
            yield (None if shared else layer), start, stop, rows.to(dtype)


class NOLABasis(nn.Module):
    """The maths of one role, shared by both APIs (``nola.inject`` and :mod:`nola.peft`): the seeded
    bases of its L layers and the mixing of all layers' coefficients in one product per factor.

    It owns no coefficients: :class:`NOLAGroup` passes its ``(L, k)`` α / β, the PEFT tuner the
    stack of its layers' ``(k,)`` vectors. :meth:`shared_factors` keeps the mixed factors of the
    current coefficients, so every layer of a forward pass reads one mixture, and a model that needs
    no gradient (generation, evaluation) mixes once until the coefficients change."""

    def __init__(self, role: str, num_layers: int, d_in: int, d_out: int, cfg: NOLAConfig) -> None:
        super().__init__()
        self.role, self.num_layers, self.d_in, self.d_out = role, num_layers, d_in, d_out
        self.rank, self.num_basis, self.scale = cfg.rank, cfg.num_basis, cfg.scale
        self.qbits, self.mode, self.chunk_rows = cfg.qbits, cfg.mode, cfg.chunk_rows
        self.basis_dtype = BASIS_DTYPES[cfg.basis_dtype]
        layers = range(num_layers) if cfg.seed_per_layer else [None]
        self.seeds_a = tuple(basis_seed(cfg.seed, role, "A", layer) for layer in layers)
        self.seeds_b = tuple(basis_seed(cfg.seed, role, "B", layer) for layer in layers)
        self.bound_a, self.bound_b = basis_bounds(d_in, d_out, cfg.rank)
        self.register_buffer("basis_a", None, persistent=False)
        self.register_buffer("basis_b", None, persistent=False)
        if self.mode == "materialised":
            self.materialise()
        self._cache: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _factor_meta(self, factor: str) -> tuple:
        if factor == "A":
            return self.seeds_a, self.num_basis, self.d_in * self.rank, self.bound_a
        return self.seeds_b, self.num_basis, self.rank * self.d_out, self.bound_b

    def materialise(self) -> None:
        """Generate and keep the bases (shared: ``(k, n)``; one seed per layer: ``(L, k, n)``)."""
        device = self.basis_a.device if self.basis_a is not None else torch.get_default_device()
        for factor, name in (("A", "basis_a"), ("B", "basis_b")):
            seeds, k, n, bound = self._factor_meta(factor)
            bases = [uniform_rows(s, k, n, bound, device=device, dtype=self.basis_dtype) for s in seeds]
            setattr(self, name, bases[0] if len(bases) == 1 else torch.stack(bases))

    def quantised(self, alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """α and β as the forward pass uses them (quantised when ``qbits`` is set)."""
        if self.qbits is None:
            return alpha, beta
        return fake_quant(alpha, self.qbits), fake_quant(beta, self.qbits)

    def _mix(self, coeff: torch.Tensor, factor: str) -> torch.Tensor:
        seeds, k, n, bound = self._factor_meta(factor)
        if self.mode == "onthefly":
            return _MixOnTheFly.apply(coeff, seeds, k, n, bound, self.chunk_rows, self.basis_dtype)
        basis = self.basis_a if factor == "A" else self.basis_b
        if basis.dtype != coeff.dtype:
            coeff = coeff.to(basis.dtype)
        if basis.device != coeff.device:
            coeff = coeff.to(basis.device)
        mixed = coeff @ basis if basis.dim() == 2 else torch.bmm(coeff.unsqueeze(1), basis).squeeze(1)
        return mixed.float() if mixed.dtype == torch.bfloat16 else mixed

    def factors_of(self, alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A of every layer ``(L, d_in, r)`` and s·B ``(L, r, d_out)`` from ``(L, k)`` coefficients."""
        alpha, beta = self.quantised(alpha, beta)
        a = self._mix(alpha, "A").view(self.num_layers, self.d_in, self.rank)
        b = self._mix(beta, "B").view(self.num_layers, self.rank, self.d_out) * self.scale
        return a, b

    def shared_factors(self, sources: Callable[[], tuple[torch.Tensor, ...]],
                       mix: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                       watch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """``mix()`` once for the current state of the coefficient tensors ``sources()``.

        The result is kept while the tensors keep their storage and version counters (an optimiser
        step, ``copy_``, ``load_state_dict`` all bump them) and the grad mode stays. A caller checks
        only ``watch``, the tensors its own rows are mixed from (one layer's α and β: the rows of the
        others are theirs to check), so a pass over L layers costs O(L) checks, not O(L²). With a
        gradient the kept factors are dropped as soon as backward reaches them, so the next forward
        pass mixes again (its graph would otherwise be freed); without one they are kept across
        calls, which makes ``generate()`` mix once instead of once per token."""
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in watch)
        mode = (grad, torch.is_inference_mode_enabled())
        if self._cache is not None:
            kept_mode, kept, factors = self._cache
            if kept_mode == mode and all(kept.get(id(t), (None,))[1:] == (t.data_ptr(), t._version) for t in watch):
                return factors
        tensors = sources()
        factors = mix()
        # the tensors themselves are kept too, so no other tensor can take their id meanwhile
        self._cache = (mode, {id(t): (t, t.data_ptr(), t._version) for t in tensors}, factors)
        if grad:
            for tensor in factors:
                if tensor.requires_grad:
                    tensor.register_hook(self._forget_on_backward)
        return factors

    @staticmethod
    def project(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, index: int) -> torch.Tensor:
        """``(x A_i) (s·B_i)`` in ``x``'s dtype and on ``x``'s device (a model spread over devices
        keeps a role's bases with its first layer)."""
        return (x @ a[index].to(x.device, x.dtype)) @ b[index].to(x.device, x.dtype)

    def _forget_on_backward(self, grad: torch.Tensor) -> None:
        self._cache = None

    def forget(self) -> None:
        """Drop the kept factors (they are mixed again on the next use)."""
        self._cache = None

    def _apply(self, fn, recurse: bool = True):
        self._cache = None  # .to() / .half() move the bases; factors mixed before are stale
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict:
        # copies and pickles leave the kept factors behind: they belong to the original's tensors,
        # and factors that carry a graph cannot be deep-copied at all
        return {**super().__getstate__(), "_cache": None}

    def extra_repr(self) -> str:
        return (f"role={self.role}, layers={self.num_layers}, {self.d_in}->{self.d_out}, r={self.rank}, "
                f"k=l={self.num_basis}, mode={self.mode}, qbits={self.qbits}")


def check_mergeable(weight: torch.Tensor, where: str) -> None:
    """Refuse to fold a delta into a weight that is not plain floating point (bitsandbytes' 4-bit
    ``Params4bit`` / 8-bit ``Int8Params``, or any integer storage): the sum would be wrong or lost."""
    if type(weight).__name__ in ("Params4bit", "Int8Params") or not weight.dtype.is_floating_point:
        fail(f"{where}: cannot merge NOLA into a {str(weight.dtype).removeprefix('torch.')} "
             f"({type(weight).__name__}) weight; load the base in 16 or 32 bits to merge, or keep the adapter unmerged")


class NOLAGroup(NOLABasis):
    """The NOLA adapters of one role (e.g. every layer's query projection): α, β of shape ``(L, k)``."""

    def __init__(self, role: str, num_layers: int, d_in: int, d_out: int, cfg: NOLAConfig) -> None:
        k = cfg.num_basis
        super().__init__(role, num_layers, d_in, d_out, cfg)
        self.alpha = nn.Parameter(torch.full((num_layers, k), 1.0 / k))
        self.beta = nn.Parameter(torch.full((num_layers, k), 1.0 / k))
        self.slots: list[NOLASlot] = []
        self.merged = False
        self.disabled = False

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """α and β as the forward pass uses them (quantised when ``qbits`` is set)."""
        return self.quantised(self.alpha, self.beta)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A for every layer ``(L, d_in, r)`` and s·B ``(L, r, d_out)``."""
        return self.factors_of(self.alpha, self.beta)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = s·A·B for every layer, ``(L, d_in, d_out)``."""
        a, b = self.factors()
        return torch.bmm(a, b)

    @property
    def live(self) -> bool:
        return not (self.merged or self.disabled)

    def current_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`factors`, mixed once for the current α / β (:meth:`NOLABasis.shared_factors`)."""
        sources = (self.alpha, self.beta)
        return self.shared_factors(lambda: sources, self.factors, sources)

    def layer_delta(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """``(x A) (s·B)`` of layer ``index`` (:meth:`NOLABasis.project`)."""
        return self.project(x, *self.current_factors(), index)

    @torch.no_grad()
    def set_merged(self, merged: bool) -> None:
        """Fold every layer's ΔW into (or out of) its frozen weight; forward then skips the adapter."""
        if merged == self.merged:
            return
        for slot in self.slots:
            check_mergeable(slot.module.weight, f"NOLA role {self.role}")
        deltas = self.delta_weight()
        for slot in self.slots:
            slot.add_to_weight(deltas[slot.index], 1.0 if merged else -1.0)
        self.merged = merged
        self.forget()


class NOLASlot:
    """The NOLA adapter of one projection: layer ``index`` of ``group``, added to output columns
    ``cols`` (q and v are slices of GPT-2's fused ``c_attn``). It lives on the projection, through
    the projection's :class:`_SlotsHook`, so the projection's class and parameter names stay those
    of the base model."""

    def __init__(self, module: nn.Module, group: NOLAGroup, index: int, cols: slice, weight_in_out: bool) -> None:
        self.module, self.group, self.index, self.cols, self.weight_in_out = module, group, index, cols, weight_in_out
        hook = getattr(module, "nola_slots", None)
        if hook is None:
            hook = _SlotsHook()
            hook.handle = module.register_forward_hook(hook)
            module.nola_slots = hook
        hook.slots.append(self)
        group.slots.append(self)

    def span(self, width: int) -> tuple[int, int]:
        return self.cols.indices(width)[:2]

    def add_to_weight(self, delta: torch.Tensor, sign: float) -> None:
        """``weight += sign·ΔW`` on this slot's columns (rows of an ``nn.Linear`` weight)."""
        weight = self.module.weight
        delta = delta.to(weight.device, weight.dtype)
        if self.weight_in_out:
            weight[:, self.cols] += sign * delta
        else:
            weight[self.cols, :] += sign * delta.t()


class _SlotsHook:
    """The forward hook of an adapted projection: adds the deltas of all its slots in one
    out-of-place sum. (An in-place add into column slices of the output costs about 13% more on
    GPT-2's fused q/k/v projection: autograd then clones the whole output gradient per slice.)"""

    def __init__(self) -> None:
        self.slots: list[NOLASlot] = []

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        live = [s for s in self.slots if s.group.live]
        if not live:
            return output
        x, width = inputs[0], output.shape[-1]
        spans = sorted(((slot.span(width), slot.group.layer_delta(x, slot.index)) for slot in live),
                       key=lambda span: span[0])
        if len(spans) == 1 and spans[0][0] == (0, width):
            return output + spans[0][1]
        pieces, at = [], 0
        for (start, stop), delta in spans:
            if start > at:
                pieces.append(delta.new_zeros(*delta.shape[:-1], start - at))
            pieces.append(delta)
            at = stop
        if at < width:
            pieces.append(pieces[-1].new_zeros(*output.shape[:-1], width - at))
        return output + torch.cat(pieces, dim=-1)
