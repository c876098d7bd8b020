"""Seeded random bases that are bit-identical on every device, process and thread count.

A basis is a tensor of shape ``(k, n)`` (k basis matrices, each flattened to n numbers) drawn
i.i.d. uniform on ``[-bound, bound)``. Element ``j`` of the flattened tensor is a pure function of
``(seed, j)``: a counter-based hash (two rounds of a 32-bit finaliser) computed with 64-bit integer
tensor ops that never overflow, so any slice of rows can be regenerated on its own, on CPU or CUDA,
without touching the global torch RNG. The uniform value is ``(2·m·2⁻²⁴ − 1)·bound`` with m the top 24 bits of the hash; every step is
exact in float32 except the final multiplication, which rounds identically everywhere.
"""
from __future__ import annotations

import struct

import torch

_MASK32 = 0xFFFFFFFF
# An xor-shift / multiply finaliser with both multipliers below 2³¹, so that (x < 2³²) · c < 2⁶³
# never overflows int64 and one multiply + mask gives the product mod 2³².
_ROUNDS = ((16, 0x21F0AAAD), (15, 0x735A2D97), (15, None))
_GOLDEN = 0x9E3779B9


def _hash32_(x: torch.Tensor, tmp: torch.Tensor) -> None:
    """In place: the 32-bit finaliser on an int64 tensor holding values in [0, 2³²)."""
    for shift, mul in _ROUNDS:
        torch.bitwise_right_shift(x, shift, out=tmp)
        x.bitwise_xor_(tmp)
        if mul is not None:
            x.mul_(mul).bitwise_and_(_MASK32)


def _hash32(x: int) -> int:
    """The same finaliser on a Python integer in [0, 2³²)."""
    for shift, mul in _ROUNDS:
        x ^= x >> shift
        if mul is not None:
            x = (x * mul) & _MASK32
    return x


def _keys(seed: int) -> tuple[int, int]:
    """Two 32-bit stream keys derived from a non-negative seed of up to 64 bits."""
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"basis seed must be in [0, 2**64), got {seed}")
    key1 = _hash32((seed & _MASK32) ^ _hash32(seed >> 32))
    key2 = _hash32(key1 ^ _GOLDEN)
    return key1, key2


def uniform_rows(
    seed: int,
    num_rows: int,
    row_size: int,
    bound: float,
    start: int = 0,
    stop: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Rows ``start:stop`` of the ``(num_rows, row_size)`` basis of ``seed``, uniform on ±bound."""
    stop = num_rows if stop is None else stop
    if not 0 <= start <= stop <= num_rows:
        raise ValueError(f"row slice {start}:{stop} outside a basis of {num_rows} rows")
    if num_rows * row_size >= 1 << 32:
        raise ValueError(f"basis of {num_rows}x{row_size} exceeds the 2**32 elements a stream holds")
    key1, key2 = _keys(seed)
    h = torch.arange(start * row_size, stop * row_size, dtype=torch.int64, device=device)
    tmp = torch.empty_like(h)
    h.add_(key1).bitwise_and_(_MASK32)
    _hash32_(h, tmp)
    h.bitwise_xor_(key2)
    _hash32_(h, tmp)
    del tmp
    unit = h.bitwise_right_shift_(8).to(torch.float32).mul_(2.0**-24)
    bound32 = struct.unpack("f", struct.pack("f", bound))[0]  # the bound rounded to float32
    values = unit.mul_(2.0).sub_(1.0).mul_(bound32)
    return values.view(stop - start, row_size).to(dtype)


def basis_seed(base_seed: int, role: str, factor: str, layer: int | None = None) -> int:
    """The seed of one basis: a stable 32-bit mix of the run's seed, the role, A/B and the layer."""
    text = f"{role}/{factor}" + ("" if layer is None else f"/{layer}")
    h = _hash32(base_seed & _MASK32) ^ _hash32((base_seed >> 32) & _MASK32)
    for byte in text.encode():
        h = _hash32(h ^ byte)
    return h
