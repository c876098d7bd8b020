"""b-bit quantisation of NOLA coefficients: straight-through fake quantiser and bit packing.

Each coefficient vector v (one row: α or β of one layer) is replaced by
``Q(v) = round(v·q / max|v|) · max|v| / q`` with ``q = 2^(b-1) - 1`` (``torch.round``: halves to
even). Codes lie in [-q, q]; stored as ``code + q`` in b bits, little-endian within a byte stream,
plus one float scale ``max|v|`` per row.
"""
from __future__ import annotations

import torch

MIN_BITS, MAX_BITS = 2, 8


def check_bits(bits: int) -> int:
    """Return ``bits`` if it is a supported width, else raise ``ValueError``."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"qbits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    return bits


def qmax(bits: int) -> int:
    """Largest code magnitude for ``bits``: 2^(b-1) - 1."""
    return (1 << (check_bits(bits) - 1)) - 1


def quantize(v: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes (int8, same shape as ``v``) and per-row scales (shape ``v.shape[:-1]``)."""
    q = qmax(bits)
    scale = v.detach().abs().amax(dim=-1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round(v.detach() * q / safe.unsqueeze(-1)).clamp_(-q, q)
    return codes.to(torch.int8), scale


def dequantize(codes: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Values ``code · scale / q`` in the dtype of ``scale``."""
    return codes.to(scale.dtype) * (scale.unsqueeze(-1) / qmax(bits))


class _StraightThrough(torch.autograd.Function):
    """Forward: Q(v). Backward: the identity."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, bits: int) -> torch.Tensor:  # type: ignore[override]
        codes, scale = quantize(v, bits)
        return dequantize(codes, scale.to(v.dtype), bits)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def fake_quant(v: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantise-dequantise each row of ``v`` to ``bits``; the gradient passes straight through."""
    return _StraightThrough.apply(v, bits)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack signed codes in [-q, q] into a uint8 stream of ``ceil(numel·bits/8)`` bytes."""
    q = qmax(bits)
    flat = codes.reshape(-1).to(torch.int64)
    if flat.numel() and (flat.min() < -q or flat.max() > q):
        raise ValueError(f"codes outside [-{q}, {q}] cannot be packed in {bits} bits")
    unsigned = flat + q
    shifts = torch.arange(bits, dtype=torch.int64)
    stream = ((unsigned.unsqueeze(1) >> shifts) & 1).reshape(-1)
    pad = (-stream.numel()) % 8
    stream = torch.cat([stream, stream.new_zeros(pad)]).view(-1, 8)
    return (stream << torch.arange(8, dtype=torch.int64)).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: the first ``numel`` codes as int8."""
    q = qmax(bits)
    if packed.numel() * 8 < numel * bits:
        raise ValueError(f"{packed.numel()} bytes cannot hold {numel} codes of {bits} bits")
    stream = ((packed.to(torch.int64).unsqueeze(1) >> torch.arange(8, dtype=torch.int64)) & 1).reshape(-1)
    groups = stream[: numel * bits].view(numel, bits)
    unsigned = (groups << torch.arange(bits, dtype=torch.int64)).sum(dim=1)
    return (unsigned - q).to(torch.int8)


def pack_state(state: dict[str, torch.Tensor], bits: int) -> dict:
    """Quantise every coefficient matrix of ``state`` and pack all of them into one b-bit code
    stream plus one float32 scale vector (one scale per row), so a file holds two small tensors
    whatever the number of layers. Returns names, shapes, bits, ``codes`` (uint8), ``scale``."""
    names, shapes, codes, scales = [], [], [], []
    for name, tensor in state.items():
        q, scale = quantize(tensor.detach().float().cpu(), bits)
        names.append(name)
        shapes.append(list(tensor.shape))
        codes.append(q.reshape(-1))
        scales.append(scale.reshape(-1))
    return {"names": names, "shapes": shapes, "bits": bits,
            "codes": pack_codes(torch.cat(codes), bits), "scale": torch.cat(scales)}


def unpack_state(packed: dict) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack_state`: the dequantised matrices by name (float32)."""
    shapes = [torch.Size(s) for s in packed["shapes"]]
    codes = unpack_codes(packed["codes"], packed["bits"], sum(s.numel() for s in shapes))
    out, at, row = {}, 0, 0
    for name, shape in zip(packed["names"], shapes):
        rows = shape[:-1].numel()
        block = codes[at : at + shape.numel()].view(shape)
        out[name] = dequantize(block, packed["scale"][row : row + rows].view(shape[:-1]), packed["bits"])
        at, row = at + shape.numel(), row + rows
    return out
