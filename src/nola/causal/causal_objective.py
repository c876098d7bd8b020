"""The causal-LM loss at the target positions only, through the model's own forward.

A ``transformers`` causal LM's ``labels=`` loss runs the LM head (49,152 outputs for SmolLM2, 32,000
for LLaMA-2) at every position of the batch and then ignores the prompt and padding positions. Here
the model's own forward is asked for the logits of the target positions only: ``logits_to_keep`` as
a (B, T) boolean mask, which every causal LM built on ``transformers``' ``slice_logits_to_keep``
accepts, selects the final hidden states before the head. So the decoder body runs once over the
batch (right-padded to its longest sequence by :func:`nola.causal.alpaca.collate`), and the head, with
whatever the model does after it (embeddings tied to the head as SmolLM2's, Granite's logits
scaling, Gemma-2's soft-capping), on the kept rows only; the summed NLL over the kept rows is the
``labels=`` loss times its token count. Calling the model itself, not its body, keeps every hook on
it: NOLA's once-per-pass mixing of the factors, PEFT's wrappers, DistributedDataParallel.

The mask and the targets are built on the host from the labels (:func:`loss_positions`), so nothing
waits for the device (on CUDA, selecting rows by a boolean mask counts them once per forward).
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from nola.causal.alpaca import IGNORE_INDEX
from nola.errors import fail


def loss_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, targets): ``keep`` (B, T) is True where the next token is a target (its label is not
    IGNORE_INDEX), ``targets`` (N,) are those next tokens in the row-major order the kept rows take."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep, labels[:, 1:][keep[:, :-1]]


def with_loss_positions(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` (of :func:`nola.causal.alpaca.collate`) plus ``keep`` and ``targets``."""
    keep, targets = loss_positions(batch["labels"])
    return {**batch, "keep": keep, "targets": targets}


def check_target_logits(model: nn.Module) -> None:
    """The model's forward must take ``logits_to_keep`` (one-line error naming the model otherwise)."""
    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        fail(f"{type(model).__name__}.forward has no logits_to_keep argument, which training uses to run the LM "
             f"head at the target positions only; use a transformers causal LM that has it (LLaMA, Mistral, ...)")


def target_logits(net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's logits (N, V) at ``batch['keep']``, in the model's own output dtype."""
    return net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
               logits_to_keep=batch["keep"]).logits


def target_nll_sum(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ NLL of ``batch['targets']`` under ``logits`` (from :func:`target_logits`), in float32 as
    ``transformers``' own loss upcasts them."""
    return F.cross_entropy(logits.float(), batch["targets"], reduction="sum")
