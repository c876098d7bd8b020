"""LoRA dropout that stays on the padded pipeline's random stream when batches are trimmed.

The original pads every batch to ``seq_len``, so ``nn.Dropout`` draws a (B, seq_len, d) mask in
every LoRA layer. :class:`PaddedDropout` draws that same mask, with the same calls, and applies
its first T columns to a batch trimmed to T tokens: every kept element sees the number it would
have seen, and the generator ends where the original's does, so later draws agree as well. The
price is drawing seq_len/T times the numbers the trimmed batch needs.
"""
from __future__ import annotations

import torch
from torch import nn


class PaddedDropout(nn.Module):
    """``nn.Dropout(p)`` on inputs (B, T, ...) whose mask is drawn at (B, ``padded_len``, ...).

    With ``padded_len`` unset it draws at the input's own shape, i.e. it is ``nn.Dropout``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 < p < 1.0:
            raise ValueError(f"dropout probability must be in (0, 1), got {p}")
        self.p = p
        self.padded_len: int | None = None

    def noise(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """The scaled keep-mask ``nn.Dropout`` multiplies an input of ``shape`` by: on CPU its
        ``bernoulli_(1-p) / (1-p)``, elsewhere the fused kernel's (``native_dropout`` of ones)."""
        if like.device.type == "cpu":
            return torch.empty(shape, dtype=like.dtype).bernoulli_(1.0 - self.p).div_(1.0 - self.p)
        ones = torch.ones(shape, dtype=like.dtype, device=like.device)
        return torch.native_dropout(ones, self.p, True)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        length = x.shape[1] if self.padded_len is None else self.padded_len
        if x.shape[1] > length:
            raise ValueError(f"input of {x.shape[1]} tokens is longer than the padded length {length}")
        noise = self.noise((x.shape[0], length, *x.shape[2:]), x)
        return x * noise[:, : x.shape[1]]

    def extra_repr(self) -> str:
        return f"p={self.p}, padded_len={self.padded_len}"


def pad_dropout_to(model: nn.Module, length: int | None) -> None:
    """Make every :class:`PaddedDropout` in ``model`` draw its masks for ``length`` tokens."""
    for module in model.modules():
        if isinstance(module, PaddedDropout):
            module.padded_len = length
