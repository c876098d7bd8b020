"""The one training loop of ``gpt2_ft.py``, ``llama_ft.py`` and ``vit_ft.py``, and what their entries share.

A reproduction describes its run as a small *task* (:class:`Task`): the model and optimiser, the
steps of its data from a step on, the loss sum of a micro-batch, the learning rate of a step,
validation, the rows it logs and what a save writes. :class:`Trainer` does everything else, one way
for all three:

- **Steps and updates.** A *step* is what the task counts: a batch in ``gpt2_ft.py`` (microsoft/LoRA:
  the learning rate, ``--max_step`` and every interval count batches), an optimiser update in
  ``llama_ft.py`` (the Hugging Face Trainer's ``max_steps``) and ``vit_ft.py``. A step holds one or
  more micro-batches; ``steps_per_update`` steps make an update (``--grad_acc`` for GPT-2, else 1), so
  with GPT-2 a save can fall inside an update: ``resume.pt`` then keeps every rank's pending gradient.
- **The loss.** Each micro-batch's loss sum is divided by its step's count (tokens) summed over all
  ranks (:func:`nola.train.distributed.rank_share`: W processes at batch b train as one at batch W·b)
  and by ``steps_per_update`` (an update averages its steps). DistributedDataParallel skips the
  gradient all-reduce (``no_sync``) for every micro-batch but the update's last; autocast and the
  gradient scaler follow the task's precision; then the learning rate, clipping, the optimiser step.
- **No host sync per step.** The first step whose loss was not finite is a flag on the device, read
  only when a line is logged, a validation runs or a save is written (:class:`NonFinite`).
- **Cadence.** A log row every ``log_every`` steps; a validation every ``eval_every`` steps and after
  the last (its RNG forked: the run is over); a save every ``save_every`` steps, at the last, at
  ``--stop_at_step`` (then the "continue with --resume" line) and wherever the task's data yields an
  :class:`EpochEnd`. A save writes the task's files (rank 0), then ``resume.pt``
  (:mod:`nola.train.resume`: trainables, optimiser, scaler, every rank's RNG, the data position);
  ``--resume`` puts all of it back before the first step.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from nola.errors import fail
from nola.log import get_logger
from nola.train.distributed import DistContext, all_ranks_sum, barrier, gather_objects, main_decides, rank_share
from nola.train.faults import NonFinite, RunState
from nola.train.resume import (pending_grad, restore_grad, restore_trainable, resume_path, rng_state, save_resume,
                               set_rng_state)
from nola.train.workdir import append_row, claim, start_log

log = get_logger(__name__)
LOG_FILE = "log.jsonl"


@dataclass
class Step:
    """One step's micro-batches (host tensors) and this rank's count over all of them: what their loss
    sums are divided by once summed over the ranks (target tokens; 1 where the loss is a batch mean)."""

    batches: list[dict[str, torch.Tensor]]
    count: float | torch.Tensor


@dataclass
class EpochEnd:
    """Yielded by a task's data after an epoch's last step: save there (validate first if asked)."""

    validate: bool


@dataclass
class Cadence:
    """When the Trainer logs, validates, saves and stops, in steps (see the module docstring)."""

    log_every: int
    save_every: int
    stop_at: int | None = None
    log_last: bool = False  # also log the last step
    validates: bool = False  # the task has validation data
    eval_every: int | None = None  # None: validate after the last step only


class Task(Protocol):
    """What a reproduction supplies (:mod:`nola.gpt2.train`, :mod:`nola.causal.llama_train`, :mod:`nola.vit.train`)."""

    work_dir: Path
    model: nn.Module  # its parameters that require a gradient are trained and kept in resume.pt
    net: nn.Module  # what a micro-batch runs through; DistributedDataParallel wraps it
    optimizer: torch.optim.Optimizer
    max_step: int
    steps_per_update: int
    amp_dtype: torch.dtype | None  # autocast dtype, None: full precision
    scale_loss: bool  # fp16 loss scaling (a GradScaler)
    clip: float  # max gradient norm, 0: none
    cadence: Cadence
    run: dict  # the settings a resumed run must repeat, stored in resume.pt

    def steps(self, step: int) -> Iterator[Step | EpochEnd]:
        """The data from step ``step`` (0-based) on, to the last step."""

    def loss_sum(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The summed loss of one micro-batch on the device (run under the Trainer's autocast)."""

    def denominator(self, count: torch.Tensor) -> torch.Tensor:
        """What a step's loss sums are divided by, from its count summed over the ranks."""

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based)."""

    def train_row(self, step: int, lr: float, loss: float, avg: float, ms: float) -> dict:
        """Log the line of a training row and return the row: ``loss`` of the last step, ``avg`` over
        the steps since the last row, ``ms`` per step."""

    def evaluate(self, step: int) -> dict:
        """Validate, log the line and return the row's fields (the Trainer adds step and split); called
        only where ``cadence.validates``."""

    def save(self, step: int, new: bool) -> dict:
        """Rank 0: write the task's files at ``step`` (``new``: its first save there) and return the
        metadata block of ``resume.pt``."""

    def position(self) -> dict:
        """The data position resume.pt keeps besides the step (empty where the step is the position)."""

    def restore(self, state: dict) -> None:
        """Take the data position back from a resume.pt."""


class Trainer:
    """One run of a :class:`Task` on one process: ``fit`` trains from ``step`` (restored by ``--resume``)."""

    def __init__(self, task: Task, ctx: DistContext, resume: dict | None) -> None:
        self.task, self.ctx, self.device = task, ctx, ctx.device
        self.model, self.optimizer = task.model, task.optimizer
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=task.scale_loss)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.work_dir = Path(task.work_dir)
        self.step, self.lr = 0, 0.0
        self.saved: int | None = None  # the step of the last complete save (what a fault's line names)
        self.validated: int | None = None  # the step of the last validation
        self.rng: dict | None = None
        # The first step whose loss was not finite (0: none), kept on the device: no host sync per step.
        self.bad_step = torch.zeros((), dtype=torch.int64, device=self.device)
        if resume is not None:
            self._restore(resume)
        self.net = task.net
        if ctx.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(task.net, device_ids=ids, broadcast_buffers=False)

    # --- the run --------------------------------------------------------------------------------
    def open(self, state: RunState, *, flag: str, outputs: tuple[str, ...], resume: str | None,
             overwrite: bool) -> None:
        """Hold the run's folder for this run (:func:`nola.train.workdir.claim`; rank 0 decides, every
        rank fails alike) and start ``log.jsonl``: empty, or a resumed run's trimmed to its step."""
        state.trainer = self
        state.lock = main_decides(lambda: claim(self.work_dir, outputs, resumed=resumed_folder(resume),
                                                overwrite=overwrite, flag=flag), self.ctx)
        if self.ctx.is_main:
            start_log(self.work_dir / LOG_FILE, None if resume is None else self.step)
            if resume is not None:
                log.info("resuming %s at step %d", resume_path(resume), self.step)

    def fit(self) -> bool:
        """Train to the last step (True) or to ``--stop_at_step`` (False)."""
        task = self.task
        if self.step >= task.max_step:
            log.info("step %d already reaches max_step %d: nothing to train", self.step, task.max_step)
            return True
        if self._halted():
            return self._stop()
        if self.rng is not None:
            set_rng_state(self.rng, self.device)
        self.model.train()
        interactive = self.ctx.is_main and sys.stderr.isatty()
        bar = tqdm(total=task.max_step, initial=self.step, disable=not interactive, dynamic_ncols=True)
        with bar, logging_redirect_tqdm(loggers=[logging.getLogger("nola")]):
            meter, tick = self._meter(), time.perf_counter()
            for item in task.steps(self.step):
                if isinstance(item, EpochEnd):
                    if item.validate:
                        self.validate(fork_rng=True)  # draws nothing: microsoft/LoRA validates at no epoch end
                    self.save()
                    continue
                loss = self.train_step(item)
                self.bad_step = torch.where((self.bad_step == 0) & ~torch.isfinite(loss), self.step, self.bad_step)
                meter[0] += loss
                meter[1] += 1
                meter[2] = loss
                bar.update(1)
                when, done, halt = task.cadence, self.step >= task.max_step, self._halted()
                if self.step % when.log_every == 0 or (done and when.log_last):
                    self._log(meter, tick)
                    meter, tick = self._meter(), time.perf_counter()
                if when.validates and (done or (when.eval_every and self.step % when.eval_every == 0)):
                    self.validate(fork_rng=done)  # before saving: resume.pt then holds its RNG draw
                if done or halt or self.step % when.save_every == 0:
                    self.save()
                if done:
                    break
                if halt:
                    return self._stop()
        log.info("end of training at step %d; outputs in %s", self.step, self.work_dir)
        return True

    def _halted(self) -> bool:
        stop_at = self.task.cadence.stop_at
        return stop_at is not None and self.step >= stop_at

    def _stop(self) -> bool:
        log.info("stopped at step %d (--stop_at_step); continue with --resume %s", self.step, self.work_dir)
        return False

    # --- one step -------------------------------------------------------------------------------
    def train_step(self, step: Step) -> torch.Tensor:
        """Forward and backward of a step's micro-batches, then the update when the step closes one.
        Returns this rank's share of the step's loss (the ranks' mean is the loss), on the device."""
        task, world = self.task, self.ctx.world_size
        count = step.count if isinstance(step.count, torch.Tensor) else torch.tensor(float(step.count),
                                                                                       dtype=torch.float64)
        total = task.denominator(all_ranks_sum(count.to(self.device)))
        closes = (self.step + 1) % task.steps_per_update == 0
        share = torch.zeros((), dtype=torch.float64, device=self.device)
        for i, host in enumerate(step.batches):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in host.items()}
            syncs = closes and i == len(step.batches) - 1  # DDP averages the gradients once per update
            quiet = self.net.no_sync() if isinstance(self.net, DistributedDataParallel) and not syncs \
                else contextlib.nullcontext()
            with quiet:
                with autocast(self.device, task.amp_dtype):
                    loss = rank_share(task.loss_sum(self.net, batch), total, world)
                self.scaler.scale(loss / task.steps_per_update).backward()
            share += loss.detach()
        self.lr = task.lr_at(self.step)
        if closes:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
            if task.clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.trainable, task.clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return share

    # --- rows, checks, saves --------------------------------------------------------------------
    def _meter(self) -> list:
        """[Σ step losses, steps, the last step's loss], this rank's shares on the device: read only
        when a line is logged."""
        return [torch.zeros((), dtype=torch.float64, device=self.device), 0, None]

    def _row(self, row: dict) -> None:
        if self.ctx.is_main:
            append_row(self.work_dir / LOG_FILE, row)

    def _log(self, meter: list, tick: float) -> None:
        count = torch.tensor(float(meter[1]), dtype=torch.float64, device=self.device)
        sums = all_ranks_sum(torch.stack([meter[0], count, meter[2]]))
        # The first host sync since the last line; the ranks' mean of their shares is the loss.
        avg, loss = (sums[0] / sums[1]).item(), (sums[2] / self.ctx.world_size).item()
        if not math.isfinite(avg):  # some rank's loss was not finite since the last line
            self.check_finite(params=False)
        ms = (time.perf_counter() - tick) * 1000 / meter[1]
        self._row(self.task.train_row(self.step, self.lr, loss, avg, ms))

    def check_finite(self, params: bool) -> None:
        """Raise :class:`NonFinite` for the first step whose loss was not finite on any rank, or, with
        ``params``, when a trained tensor is not finite (one small collective and host sync)."""
        first = torch.where(self.bad_step > 0, self.bad_step, self.task.max_step + 1).double()
        broken = (~torch.stack([torch.isfinite(p).all() for p in self.trainable]).all()).double() if params \
            else torch.zeros((), dtype=torch.float64, device=self.device)
        flags = torch.stack([-first, broken])
        if dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        neg_first, broken_any = flags.tolist()
        if -neg_first <= self.task.max_step:
            raise NonFinite(int(-neg_first))
        if broken_any:
            raise NonFinite(self.step, "a trained parameter")

    def validate(self, fork_rng: bool = False) -> None:
        """The task's validation row, once per step; ``fork_rng``: leave the RNG as it was."""
        if self.validated == self.step:
            return
        self.check_finite(params=False)
        with torch.random.fork_rng(devices=[]) if fork_rng else contextlib.nullcontext():
            fields = self.task.evaluate(self.step)
        self.validated = self.step
        self._row({"step": self.step, "split": "valid", **fields})

    def save(self) -> None:
        """The task's files and ``resume.pt`` at the current step; never of a non-finite run. Inside an
        update, every rank's pending gradient goes into ``resume.pt`` too."""
        self.check_finite(params=True)
        inside_update = self.step % self.task.steps_per_update != 0
        grad = pending_grad(self.model) if inside_update else None
        rngs, grads = zip(*gather_objects((rng_state(self.device), grad), self.ctx))
        if self.ctx.is_main:
            meta = self.task.save(self.step, new=self.step != self.saved)
            position = {"step": self.step, **self.task.position(), **({"grad": list(grads)} if inside_update else {})}
            save_resume(self.work_dir, meta, position, self.model, self.optimizer, self.scaler, list(rngs),
                        self.task.run)
        self.saved = self.step
        barrier()

    def _restore(self, state: dict) -> None:
        restore_trainable(self.model, self.optimizer, self.scaler, state)
        if "grad" in state:  # saved inside an update: the micro-batches of it already trained
            restore_grad(self.model, state["grad"][self.ctx.rank], self.device)
        self.step = self.saved = state["step"]
        self.rng = state["rng"][self.ctx.rank]
        self.task.restore(state)


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device``'s type; off for None (full precision)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def resumed_folder(resume: str | None) -> str | None:
    """The folder of the run ``--resume`` continues (a run's default output folder); None without it."""
    return str(resume_path(resume).parent) if resume else None


def output_folder(given: str | None, resume: str | None, flag: str, what: str) -> str:
    """The run's output folder: ``flag``'s value, else the folder of the run ``--resume`` continues;
    one error line without either (``what``: what the folder holds)."""
    if given is not None:
        return given
    if resume is None:
        fail(f"{flag} is required ({what})")
    return resumed_folder(resume)


def check_run(state: dict, run: dict, where: str) -> None:
    """A resumed run must repeat the interrupted run's settings (one line naming the first that differs)."""
    for key, value in run.items():
        if state["run"].get(key) != value:
            fail(f"--resume {where}: {key} was {state['run'].get(key)!r} in the interrupted run, now {value!r}: "
                 f"resume with the same flags")
