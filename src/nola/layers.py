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
from dataclasses import asdict, dataclass

import loralib
import torch
from torch import nn

from nola.basis import basis_seed, uniform_rows
from nola.dropout import PaddedDropout
from nola.quant import check_bits, fake_quant

MODES = ("materialised", "onthefly")
BASIS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass
class NOLAConfig:
    """Everything needed to rebuild a NOLA adapter (stored in every adapter checkpoint)."""

    rank: int = 8
    num_basis: int = 1000
    c: float = 1.0
    qv: bool = True
    mlp: bool = False
    seed: int = 0
    seed_per_layer: bool = False
    qbits: int | None = None
    mode: str = "materialised"
    basis_dtype: str = "float32"
    chunk_rows: int = 128

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"nola_rank must be >= 1, got {self.rank}")
        if self.num_basis < 1:
            raise ValueError(f"nola_num_basis must be >= 1, got {self.num_basis}")
        if not (self.qv or self.mlp):
            raise ValueError("NOLA needs a target: --nola_qv and/or --nola_mlp")
        if self.qbits is not None:
            check_bits(self.qbits)
        if self.mode not in MODES:
            raise ValueError(f"nola mode must be one of {MODES}, got {self.mode!r}")
        if self.basis_dtype not in BASIS_DTYPES:
            raise ValueError(f"basis dtype must be one of {tuple(BASIS_DTYPES)}, got {self.basis_dtype!r}")

    @property
    def scale(self) -> float:
        """s = c / r."""
        return self.c / self.rank

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoRAConfig:
    """microsoft/LoRA's NLG settings: query and value of the fused attention projection."""

    dim: int = 4
    alpha: float = 32.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"lora_dim must be >= 1, got {self.dim}")

    def to_dict(self) -> dict:
        return asdict(self)


# Settings that change an adapter's numbers (checked against a checkpoint); the rest (execution
# mode, basis dtype, chunking, dropout) may differ between training and decoding.
NOLA_IDENTITY = ("rank", "num_basis", "c", "qv", "mlp", "seed", "seed_per_layer", "qbits")
LORA_IDENTITY = ("dim", "alpha")


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


class NOLAGroup(nn.Module):
    """The NOLA adapters of one role (e.g. every layer's query projection)."""

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
        k = cfg.num_basis
        self.alpha = nn.Parameter(torch.full((num_layers, k), 1.0 / k))
        self.beta = nn.Parameter(torch.full((num_layers, k), 1.0 / k))
        self.register_buffer("basis_a", None, persistent=False)
        self.register_buffer("basis_b", None, persistent=False)
        if self.mode == "materialised":
            self.materialise()

    def _factor_meta(self, factor: str) -> tuple:
        if factor == "A":
            return self.seeds_a, self.num_basis, self.d_in * self.rank, self.bound_a
        return self.seeds_b, self.num_basis, self.rank * self.d_out, self.bound_b

    def materialise(self) -> None:
        """Generate and keep the bases (shared: ``(k, n)``; one seed per layer: ``(L, k, n)``)."""
        device = self.alpha.device
        for factor, name in (("A", "basis_a"), ("B", "basis_b")):
            seeds, k, n, bound = self._factor_meta(factor)
            bases = [uniform_rows(s, k, n, bound, device=device, dtype=self.basis_dtype) for s in seeds]
            setattr(self, name, bases[0] if len(bases) == 1 else torch.stack(bases))

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """α and β as the forward pass uses them (quantised when ``qbits`` is set)."""
        if self.qbits is None:
            return self.alpha, self.beta
        return fake_quant(self.alpha, self.qbits), fake_quant(self.beta, self.qbits)

    def _mix(self, coeff: torch.Tensor, factor: str) -> torch.Tensor:
        seeds, k, n, bound = self._factor_meta(factor)
        if self.mode == "onthefly":
            return _MixOnTheFly.apply(coeff, seeds, k, n, bound, self.chunk_rows, self.basis_dtype)
        basis = self.basis_a if factor == "A" else self.basis_b
        if basis.dtype != coeff.dtype:
            coeff = coeff.to(basis.dtype)
        mixed = coeff @ basis if basis.dim() == 2 else torch.bmm(coeff.unsqueeze(1), basis).squeeze(1)
        return mixed.float() if mixed.dtype == torch.bfloat16 else mixed

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A for every layer ``(L, d_in, r)`` and s·B ``(L, r, d_out)``."""
        alpha, beta = self.coefficients()
        a = self._mix(alpha, "A").view(self.num_layers, self.d_in, self.rank)
        b = self._mix(beta, "B").view(self.num_layers, self.rank, self.d_out) * self.scale
        return a, b

    def delta_weight(self) -> torch.Tensor:
        """ΔW = s·A·B for every layer, ``(L, d_in, d_out)``."""
        a, b = self.factors()
        return torch.bmm(a, b)

    def extra_repr(self) -> str:
        return (f"role={self.role}, layers={self.num_layers}, {self.d_in}->{self.d_out}, r={self.rank}, "
                f"k=l={self.num_basis}, mode={self.mode}, qbits={self.qbits}")


def apply_delta(x: torch.Tensor, factors: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``(x A) (s·B)`` for one layer's factors, in ``x``'s dtype."""
    a, b = factors
    return (x @ a.to(x.dtype)) @ b.to(x.dtype)


def lora_attention(n_embd: int, cfg: LoRAConfig) -> loralib.MergedLinear:
    """The fused q/k/v projection with LoRA on q and v, exactly as microsoft/LoRA's GPT-2 builds it;
    its dropout draws the padded batch's masks (:class:`nola.dropout.PaddedDropout`)."""
    layer = loralib.MergedLinear(
        n_embd, 3 * n_embd, r=cfg.dim, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        enable_lora=[True, False, True], fan_in_fan_out=True, merge_weights=False,
    )
    if cfg.dropout > 0:
        layer.lora_dropout = PaddedDropout(cfg.dropout)
    return layer
