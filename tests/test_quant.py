"""The b-bit quantiser: code range, the dequantisation formula, straight-through gradient, packing."""
from __future__ import annotations

import pytest
import torch

from nola.quant import dequantize, fake_quant, pack_codes, qmax, quantize, unpack_codes


@pytest.mark.parametrize("bits", range(2, 9))
def test_codes_range_and_formula(bits):
    torch.manual_seed(bits)
    v = torch.randn(5, 97, dtype=torch.float64)
    q = 2 ** (bits - 1) - 1
    assert qmax(bits) == q
    codes, scale = quantize(v, bits)
    assert codes.dtype == torch.int8 and codes.abs().max().item() == q
    assert torch.equal(scale, v.abs().amax(dim=1))
    expected = torch.round(v * q / v.abs().amax(dim=1, keepdim=True)) * v.abs().amax(dim=1, keepdim=True) / q
    assert torch.allclose(dequantize(codes, scale, bits), expected, rtol=0, atol=1e-15)
    assert torch.allclose(fake_quant(v, bits), expected, rtol=0, atol=1e-15)
    # Quantising a quantised vector changes nothing.
    assert torch.allclose(fake_quant(fake_quant(v, bits), bits), expected, rtol=0, atol=1e-15)


def test_zero_vector_and_gradient_is_identity():
    assert torch.equal(fake_quant(torch.zeros(2, 4), 3), torch.zeros(2, 4))
    v = torch.randn(3, 10, requires_grad=True)
    g = torch.randn(3, 10)
    fake_quant(v, 3).backward(g)
    assert torch.equal(v.grad, g)


@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_unpack_lossless(bits):
    q = 2 ** (bits - 1) - 1
    torch.manual_seed(0)
    for numel in (1, 7, 8, 1000, 1001):
        codes = torch.randint(-q, q + 1, (numel,), dtype=torch.int8)
        packed = pack_codes(codes, bits)
        assert packed.dtype == torch.uint8 and packed.numel() == (numel * bits + 7) // 8
        assert torch.equal(unpack_codes(packed, bits, numel), codes)


def test_hand_packed_example_and_bad_input():
    # 3 bits, q = 3: codes -3, 0, 3 are stored as 0, 3, 6 -> bits 000 110 011 (little-endian).
    packed = pack_codes(torch.tensor([-3, 0, 3], dtype=torch.int8), 3)
    assert packed.tolist() == [0b10011000, 0b1]
    with pytest.raises(ValueError):
        pack_codes(torch.tensor([4], dtype=torch.int8), 3)
    with pytest.raises(ValueError):
        qmax(9)
