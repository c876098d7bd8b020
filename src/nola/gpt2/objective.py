"""The training and validation objective evaluated only where the loss is.

The original runs the 50,257-way LM head and log-softmax at every position of a padded batch and
then multiplies most of them by mask 0. Here the final hidden states of the loss positions (the
``positions`` of :func:`nola.gpt2.dataset.trim_collate`) are gathered first and the head and loss run
on those rows only: the same per-token numbers and the same sum (:func:`nola.gpt2.model.lm_loss_sum`;
the training loop divides it by ``Σmask + 1e-4`` over the ranks, as :func:`nola.gpt2.model.lm_loss`).
The positions come from the collate on the host, so nothing waits for the device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nola.gpt2.model import GPT2LMModel, lm_loss_sum


def head_at(hidden: torch.Tensor, head_weight: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """LM-head logits (N, V) of the rows ``positions`` of ``hidden`` (B, T, D) read as (B·T, D)."""
    return F.linear(hidden.flatten(0, 1).index_select(0, positions), head_weight)


def masked_lm_loss_sum(hidden: torch.Tensor, head_weight: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                       positions: torch.Tensor, label_smooth: float = 0.0) -> torch.Tensor:
    """:func:`nola.gpt2.model.lm_loss_sum` of the full logits, computed at ``positions`` (mask ≠ 0) only."""
    picked = lambda t: t.flatten().index_select(0, positions)  # noqa: E731
    return lm_loss_sum(head_at(hidden, head_weight, positions), picked(target), picked(mask), label_smooth)


def masked_nll_sum(model: GPT2LMModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation: Σ mask·nll (no smoothing) over a batch on the model's device, and Σ mask."""
    hidden, _ = model.transformer(batch["input"])  # final states; the head runs below
    positions = batch["positions"]
    logits = head_at(hidden, model.transformer.wte.weight, positions)
    nll = F.cross_entropy(logits.float(), batch["target"].flatten().index_select(0, positions), reduction="none")
    return (nll * batch["mask"].flatten().index_select(0, positions)).sum(), batch["mask"].sum()


class MaskedLM(nn.Module):
    """The summed training loss of a batch as one module, so DistributedDataParallel can wrap it."""

    def __init__(self, model: GPT2LMModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                label_smooth: float = 0.0) -> torch.Tensor:
        hidden, _ = self.model.transformer(input_ids)
        return masked_lm_loss_sum(hidden, self.model.transformer.wte.weight, target, mask, positions, label_smooth)
