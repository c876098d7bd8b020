"""AdamW and learning-rate schedules as microsoft/LoRA's NLG scripts define them.

:class:`AdamW` is the "weight decay fix" Adam of that code (and of early ``transformers``), not
``torch.optim.AdamW``: ε is added to ``√v`` *before* bias correction, bias correction is optional
(``--correct_bias``; off by default, as in BERT's TF code), and the decoupled decay
``p -= lr·wd·p`` is applied *after* the Adam update. With ``--correct_bias`` and ε → 0 it equals
``torch.optim.AdamW`` with weight decay 0.

Schedules are pure functions of the number of batches already trained (``step``): the update made
after batch ``t`` (1-based) uses ``lr_at(t - 1)``, exactly as the original's per-batch
``scheduler.step()`` after ``optimizer.step()`` does, so a linear warm-up starts at 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from nola.config import OptimConfig
from nola.errors import fail

NO_DECAY = ("bias", "ln_1.weight", "ln_2.weight", "ln_f.weight")


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay, microsoft/LoRA's variant (see the module docstring)."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.98),
                 eps: float = 1e-6, weight_decay: float = 0.0, correct_bias: bool = True) -> None:
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid AdamW settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      correct_bias=correct_bias))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                step_size = group["lr"]
                if group["correct_bias"]:
                    t = state["step"]
                    step_size *= math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)
                if group["weight_decay"] > 0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss


def param_groups(model: nn.Module, no_decay_bias: bool) -> list[dict]:
    """The trainable parameters only; with ``no_decay_bias`` biases/LayerNorm weights get no decay."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not no_decay_bias:
        return [{"params": [p for _, p in named]}]
    decay = [p for n, p in named if not n.endswith(NO_DECAY)]
    plain = [p for n, p in named if n.endswith(NO_DECAY)]
    return [g for g in ({"params": decay}, {"params": plain, "weight_decay": 0.0}) if g["params"]]


def make_optimizer(model: nn.Module, args: OptimConfig) -> AdamW:
    return AdamW(param_groups(model, args.no_decay_bias), lr=args.lr, betas=(args.adam_beta1, args.adam_beta2),
                 eps=args.adam_epsilon, weight_decay=args.weight_decay, correct_bias=args.correct_bias)


@dataclass(frozen=True)
class Schedule:
    """Learning rate as a function of batches already trained."""

    name: str
    lr: float
    warmup: int
    max_step: int
    knots: tuple[tuple[int, float], ...] = ()

    def lr_at(self, step: int) -> float:
        if self.name == "cycle":
            return _piecewise(self.knots, step)
        if step < self.warmup:
            return self.lr * step / self.warmup
        if self.name == "linear":
            return self.lr * max(0.0, (self.max_step - step) / max(1, self.max_step - self.warmup))
        if self.name == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, self.max_step) / max(1, self.max_step)))
        return self.lr


def _piecewise(knots: tuple[tuple[int, float], ...], step: int) -> float:
    """Linear interpolation between (step, lr) knots; the last lr after the last knot."""
    for (s0, lr0), (s1, lr1) in zip(knots, knots[1:]):
        if s0 <= step < s1:
            w = (step - s0) / (s1 - s0)
            return (1.0 - w) * lr0 + w * lr1
    return knots[-1][1] if step >= knots[-1][0] else knots[0][1]


def cycle_knots(i_steps: str, i_lrs: str) -> tuple[tuple[int, float], ...]:
    """Parse ``--i_steps`` / ``--i_lrs`` into increasing (step, lr) knots."""
    try:
        steps = [int(s) for s in i_steps.split(",")]
        lrs = [float(s) for s in i_lrs.split(",")]
    except ValueError:
        fail(f"--i_steps {i_steps!r} / --i_lrs {i_lrs!r}: give comma-separated integers / numbers")
    if len(steps) != len(lrs):
        fail(f"--i_steps has {len(steps)} entries but --i_lrs has {len(lrs)}: give one lr per step")
    if any(b <= a for a, b in zip(steps, steps[1:])) or steps[0] < 0:
        fail(f"--i_steps {i_steps}: steps must be non-negative and strictly increasing")
    if any(not math.isfinite(lr) or lr < 0 for lr in lrs):
        fail(f"--i_lrs {i_lrs}: every learning rate must be a finite number >= 0")
    return tuple(zip(steps, lrs))
