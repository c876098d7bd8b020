"""The fine-tuning loop behind ``src/gpt2_ft.py``: microsoft/LoRA's NLG training, with NOLA.

One step is one batch per process, as in the original: the learning rate follows the batch count,
the optimiser updates every ``--grad_acc`` batches, and ``max_step`` defaults to
``ceil(max_epoch · ceil(N / batch) / world_size)``. Under several processes the model is wrapped in
DistributedDataParallel (gradients averaged) and each rank trains its own shard of every epoch:
with W processes at batch b, rank r's k-th batch holds entries ``W·(k·b + i) + r`` (i < b) of the
epoch's permutation, so the ranks' batches interleaved are one process's k-th batch of W·b. Each
micro-step's loss is divided by its target-token count over all ranks, so W processes at batch b
train as one at batch W·b (with ``--grad_acc``: micro-step by micro-step, as one process averages
its micro-batches' means); the original divides by each rank's own count, the same only for W = 1.

Outputs in ``--work_dir``: ``model.<step>.pt`` (the compact adapter file, or a full state dict with
``--save_full``) every ``--save_interval`` steps and at each epoch end, ``resume.pt`` (see
:mod:`nola.train.resume`) alongside, and ``log.jsonl`` with one row per log line and per validation.
The run holds ``--work_dir`` for itself (:func:`nola.train.workdir.claim`) and ends on a fault (full disk,
lost processes, non-finite loss) with one line and no damaged file (:mod:`nola.train.faults`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from nola.gpt2.build import BuiltModel, build_model, model_config
from nola.gpt2.checkpoint import check_metadata, metadata, save_checkpoint
from nola.config import AdapterRequest, LaunchConfig, ModelSource, NOLAConfig, OptimConfig, TrainConfig
from nola.gpt2.dataset import make_loader, training_datasets, trim_collate
from nola.train.distributed import DistContext, all_ranks_sum, barrier, gather_objects, init_distributed, main_decides
from nola.gpt2.dropout import pad_dropout_to
from nola.errors import fail
from nola.train.faults import NonFinite, guarded_run
from nola.fileio import atomic_open, check_writable
from nola.log import get_logger
from nola.gpt2.objective import MaskedLM, masked_nll_sum
from nola.train.optim import Schedule, cycle_knots, make_optimizer
from nola.gpt2.resume import adopt_resume, resume_source, run_record
from nola.train.resume import (RESUME_FILE, check_resume_world, load_resume, pending_grad, restore_grad, restore_trainable,
                               resume_path, rng_state, save_resume, set_rng_state)
from nola.gpt2.sizes import adapter_file_bytes
from nola.train.workdir import append_row, claim, trim_log

log = get_logger(__name__)
LOG_FILE = "log.jsonl"
OUTPUTS = (LOG_FILE, RESUME_FILE, "model.*")  # what a run writes in --work_dir: model.<step>/ and model.<step>.pt too


def default_max_step(optim: OptimConfig, batch_size: int, num_examples: int, world_size: int) -> int:
    """``--max_step``, else the last ``--i_steps`` knot (cycle), else the original's
    ``ceil(max_epoch · ceil(N / batch) / world_size)``."""
    if optim.max_step is not None:
        return optim.max_step
    if optim.scheduler == "cycle":
        return cycle_knots(optim.i_steps, optim.i_lrs)[-1][0]
    batches = math.ceil(num_examples / batch_size)
    return (optim.max_epoch * batches + world_size - 1) // world_size


def _precision(args: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether to scale the loss)."""
    if device.type == "cuda":
        if args.fp16:
            return torch.float16, True
        if args.bf16:
            if not torch.cuda.is_bf16_supported():
                fail("--bf16: this GPU has no bf16 support; use --fp16")
            return torch.bfloat16, False
        return None, False
    if args.fp16 or args.bf16:
        log.info("CPU: mixed precision runs as bf16 autocast (fp16 autocast with loss scaling is CUDA-only here)")
        return torch.bfloat16, False
    return None, False


class Trainer:
    """State and steps of one fine-tuning run on one process."""

    def __init__(self, args: TrainConfig, optim: OptimConfig, seed: int, ctx: DistContext, built: BuiltModel,
                 train_ds: Dataset, valid_ds: Dataset, resume: dict | None) -> None:
        self.args, self.optim, self.seed, self.ctx, self.device = args, optim, seed, ctx, ctx.device
        self.model, self.base_path, self.base_sha = built.model, built.base_path, built.base_sha256
        self.work_dir = Path(args.work_dir)
        self.loader = make_loader(train_ds, args.train_batch_size, shuffle=True, seed=seed,
                                  rank=ctx.rank, world_size=ctx.world_size, drop_last=True, collate_fn=trim_collate)
        if len(self.loader) == 0:
            fail(f"--train_data {args.train_data}: {len(train_ds)} examples make no full batch of "
                 f"{args.train_batch_size} on each of {ctx.world_size} processes; lower --train_batch_size")
        shard = Subset(valid_ds, range(ctx.rank, len(valid_ds), ctx.world_size))
        self.valid_loader = DataLoader(shard, batch_size=args.valid_batch_size, shuffle=False, collate_fn=trim_collate)
        self.max_step = default_max_step(optim, args.train_batch_size, len(train_ds), ctx.world_size)
        knots = cycle_knots(optim.i_steps, optim.i_lrs) if optim.scheduler == "cycle" else ()
        self.schedule = Schedule(optim.scheduler, optim.lr, optim.warmup_step, self.max_step, knots)
        self.amp_dtype, scale = _precision(args, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=scale)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.model, optim)
        self.full = args.save_full or self.model.adapter is None
        self.step, self.position, self.best_ppl, self.rng = 0, (1, 0), None, None
        # The first step whose loss was not finite (0: none), kept on the device: no host sync per step.
        self.bad_step = torch.zeros((), dtype=torch.int64, device=self.device)
        if resume is not None:
            self._restore(resume)
        pad_dropout_to(self.model, args.seq_len)  # LoRA dropout masks as the padded batches draw them
        self.net = MaskedLM(self.model, ctx.world_size)
        if ctx.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.net, device_ids=ids, broadcast_buffers=False)
        self.saved = self.step if resume is not None else None  # the step of the last complete model checkpoint
        self.last_valid_step = -1

    # --- resume -------------------------------------------------------------------------------
    def _restore(self, state: dict) -> None:
        restore_trainable(self.model, self.optimizer, self.scaler, state)
        if "grad" in state:  # saved inside an update: the batches of it already trained
            restore_grad(self.model, state["grad"][self.ctx.rank], self.device)
        self.step, self.best_ppl = state["step"], state["best_ppl"]
        self.position = (state["epoch"], state["batch"])
        self.rng = state["rng"][self.ctx.rank]

    # --- outputs ------------------------------------------------------------------------------
    def _row(self, **row) -> None:
        if self.ctx.is_main:
            append_row(self.work_dir / LOG_FILE, row)

    def check_finite(self, params: bool) -> None:
        """Raise :class:`NonFinite` for the first step whose loss was not finite on any rank, or, with
        ``params``, when a trainable tensor is not finite (one small collective and host sync)."""
        first = torch.where(self.bad_step > 0, self.bad_step, self.max_step + 1).double()
        broken = (~torch.stack([torch.isfinite(p).all() for p in self.trainable]).all()).double() if params \
            else torch.zeros((), dtype=torch.float64, device=self.device)
        flags = torch.stack([-first, broken])
        if dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        neg_first, broken_any = flags.tolist()
        if -neg_first <= self.max_step:
            raise NonFinite(int(-neg_first))
        if broken_any:
            raise NonFinite(self.step, "a trained parameter")

    def save(self, epoch: int, batch: int) -> None:
        """``model.<step>.pt`` (once per step) and ``resume.pt`` at position (epoch, batch); never of
        a non-finite run."""
        self.check_finite(params=True)
        inside_update = self.step % self.args.grad_acc != 0
        grad = pending_grad(self.model) if inside_update else None
        rngs, grads = zip(*gather_objects((rng_state(self.device), grad), self.ctx))
        if self.ctx.is_main:
            if self.step != self.saved:
                path, size = save_checkpoint(self.model, self.work_dir, self.base_path, self.base_sha, self.step,
                                             full=self.full)
                log.info("saved %s: %s bytes (%.1f KB)%s", path, f"{size:,}", size / 1024,
                         ", full state dict" if self.full else "")
            position = {"step": self.step, "epoch": epoch, "batch": batch, "best_ppl": self.best_ppl,
                        **({"grad": list(grads)} if inside_update else {})}
            run = run_record(self.args, self.seed, self.ctx.world_size)
            save_resume(self.work_dir, metadata(self.model, self.base_path, self.base_sha), position,
                        self.model, self.optimizer, self.scaler, list(rngs), run)
        self.saved = self.step
        barrier()

    # --- steps --------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def train_batch(self, batch: dict[str, torch.Tensor], update: bool, lr: float) -> torch.Tensor:
        """Forward/backward of one trimmed batch (:func:`trim_collate`); an optimiser update when
        ``update``. The loss is divided by the micro-step's target-token count over all ranks, so N
        ranks at batch b compute one process's loss and gradient at batch N·b (:func:`nola.gpt2.model.lm_loss`).
        Returns this rank's share of it times the world size (the ranks' mean is the loss), detached
        and on the device (no host sync)."""
        inp, tgt, mask, pos = (batch[k].to(self.device) for k in ("input", "target", "mask", "positions"))
        tokens = all_ranks_sum(mask.sum())
        ddp = isinstance(self.net, DistributedDataParallel)
        no_sync = self.net.no_sync() if (not update and ddp) else contextlib.nullcontext()
        with no_sync:
            with self._autocast():
                loss = self.net(inp, tgt, mask, pos, self.args.label_smooth, tokens)
            self.scaler.scale(loss / self.args.grad_acc).backward()
        if update:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if self.args.clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.trainable, self.args.clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Token-averaged loss (no smoothing, completion tokens) over the whole validation set; ppl."""
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        for batch in self.valid_loader:
            on_device = {k: batch[k].to(self.device) for k in ("input", "target", "mask", "positions")}
            with self._autocast():
                nll, count = masked_nll_sum(self.model, on_device)
            total[0] += nll
            total[1] += count
        if dist.is_initialized():
            dist.all_reduce(total)
        self.model.train()
        loss = (total[0] / total[1].clamp_min(1)).item()
        return loss, math.exp(min(loss, 700.0))

    def validate(self) -> None:
        if self.last_valid_step == self.step:
            return
        start = time.perf_counter()
        loss, ppl = self.evaluate()
        self.best_ppl = ppl if self.best_ppl is None else min(self.best_ppl, ppl)
        self.last_valid_step = self.step
        log.info("| valid at step %8d | loss %6.3f | ppl %9.3f | best ppl %9.3f | %.1fs", self.step, loss, ppl,
                 self.best_ppl, time.perf_counter() - start)
        self._row(step=self.step, split="valid", loss=loss, ppl=ppl)

    def fit(self) -> None:
        if self.step >= self.max_step:
            log.info("step %d already reaches max_step %d: nothing to train", self.step, self.max_step)
            return
        if self.rng is not None:
            set_rng_state(self.rng, self.device)
        self.model.train()
        interactive = self.ctx.is_main and sys.stderr.isatty()
        bar = tqdm(total=self.max_step, initial=self.step, disable=not interactive, dynamic_ncols=True)
        with bar, logging_redirect_tqdm(loggers=[logging.getLogger("nola")]):
            self._epochs(bar)

    def _epochs(self, bar: tqdm) -> None:
        args = self.args
        epoch, skip = self.position
        meter, tick = self._meter(), time.perf_counter()
        while self.optim.max_epoch is None or epoch <= self.optim.max_epoch:
            self.loader.sampler.set_epoch(epoch)
            done = False
            # Each epoch's DataLoader iterator draws a base seed from the global RNG, as the original's
            # does; a run resumed mid-epoch restored a state that already holds that draw.
            with torch.random.fork_rng(devices=[]) if skip else contextlib.nullcontext():
                batches = iter(self.loader)
            for idx, batch in enumerate(itertools.islice(batches, skip, None), start=skip):
                self.step += 1
                lr = self.schedule.lr_at(self.step - 1)
                loss = self.train_batch(batch, update=self.step % args.grad_acc == 0, lr=lr)
                self.bad_step = torch.where((self.bad_step == 0) & ~torch.isfinite(loss), self.step, self.bad_step)
                meter[0] += loss.double()
                meter[1] += 1
                bar.update(1)
                if self.step % args.log_interval == 0:
                    self._log_train(epoch, idx + 1, lr, loss, meter, tick)
                    meter, tick = self._meter(), time.perf_counter()
                done = self.step >= self.max_step
                halt = args.stop_at_step is not None and self.step >= args.stop_at_step
                if not done and self.step % args.eval_interval == 0:
                    self.validate()  # before saving: resume.pt then holds its RNG draw and best ppl
                if not done and (halt or self.step % args.save_interval == 0):
                    self.save(epoch, idx + 1)
                if halt and not done:
                    log.info("stopped at step %d (--stop_at_step); continue with --resume %s", self.step,
                             self.work_dir)
                    return
                if done:
                    break
            if done or epoch % args.eval_epoch == 0:
                with torch.random.fork_rng(devices=[]):  # the original has no epoch-end validation to draw
                    self.validate()
            self.save(epoch + 1, 0)
            if done:
                break
            epoch, skip = epoch + 1, 0
        log.info("end of training at step %d", self.step)
        log.info("training log: %s (plot: python scripts/plot_log.py %s)", self.work_dir / LOG_FILE, self.work_dir)

    def _meter(self) -> list:
        """[Σ loss on the device in float64, batch count]: read only when a line is logged."""
        return [torch.zeros((), dtype=torch.float64, device=self.device), 0]

    def _log_train(self, epoch: int, batches: int, lr: float, last: torch.Tensor, meter: list, tick: float) -> None:
        count = torch.tensor(float(meter[1]), dtype=torch.float64, device=self.device)
        sums = all_ranks_sum(torch.stack([meter[0], count, last.double()]))
        # The first host sync since the last line; the ranks' mean of their shares is the loss.
        avg, loss = (sums[0] / sums[1]).item(), (sums[2] / self.ctx.world_size).item()
        if not math.isfinite(avg):  # some rank's loss was not finite since the last line
            self.check_finite(params=False)
        ms = (time.perf_counter() - tick) * 1000 / meter[1]
        ppl = math.exp(min(avg, 700.0))
        log.info("| epoch %3d step %8d | %6d batches | lr %.3g | ms/batch %7.2f | loss %6.3f | avg loss %6.3f "
                 "| ppl %9.3f", epoch, self.step, batches, lr, ms, loss, avg, ppl)
        self._row(step=self.step, split="train", lr=lr, loss=loss, avg_loss=avg, ppl=ppl, ms_per_batch=ms)


def _announce(trainer: Trainer, num_train: int, num_valid: int) -> None:
    args, model, ctx = trainer.args, trainer.model, trainer.ctx
    precision = {None: "fp32", torch.float16: "fp16 autocast", torch.bfloat16: "bf16 autocast"}[trainer.amp_dtype]
    log.info("%d process(es) on %s, %s; %d training / %d validation examples; %d batches per epoch per "
             "process; max_step %d", ctx.world_size, trainer.device.type, precision, num_train, num_valid,
             len(trainer.loader), trainer.max_step)
    adapter = model.adapter
    if adapter is None:
        log.info("no adapter: checkpoints hold the full state dict")
        return
    size, _ = adapter_file_bytes(model.config, adapter, trainer.base_path, trainer.base_sha, trainer.max_step)
    bits = f"{adapter.qbits}-bit codes" if isinstance(adapter, NOLAConfig) and adapter.qbits else "fp32"
    log.info("adapter folder model.<step>/: about %s bytes (%.1f KB, %s)%s", f"{size:,}", size / 1024, bits,
             "; --save_full writes full state dicts instead" if args.save_full else "")


def train(launch: LaunchConfig, source: ModelSource, request: AdapterRequest, cfg: TrainConfig,
          optim: OptimConfig) -> None:
    """Check everything, then fine-tune as the configs say (``--resume``: continue a run)."""
    if optim.scheduler == "cycle":
        cycle_knots(optim.i_steps, optim.i_lrs)
    resume = load_resume(cfg.resume) if cfg.resume else None
    if resume is not None:
        request = adopt_resume(resume, cfg, launch.random_seed, request)
        source = resume_source(resume, source, cfg.resume)
    if cfg.work_dir is None:
        work_dir = str(resume_path(cfg.resume).parent) if resume else os.getenv("PT_OUTPUT_DIR", "gpt2_model")
        cfg = dataclasses.replace(cfg, work_dir=work_dir)
    check_writable(cfg.work_dir, "--work_dir", folder=True)
    ctx = init_distributed(launch)
    with guarded_run(ctx, cfg.work_dir, launch.dist_timeout) as state:
        if resume is not None:
            check_resume_world(resume, ctx.world_size)
        train_ds, valid_ds = training_datasets(cfg, model_config(source.model_card).vocab_size)
        built = build_model(source, ctx.device, request)
        if resume is not None:
            check_metadata(resume, built.model.config, f"--resume {cfg.resume}", source.init_checkpoint,
                           built.base_sha256)
        trainer = state.trainer = Trainer(cfg, optim, launch.random_seed, ctx, built, train_ds, valid_ds, resume)
        resumed = resume_path(cfg.resume).parent if cfg.resume else None
        state.lock = main_decides(lambda: claim(trainer.work_dir, OUTPUTS, resumed=resumed, overwrite=cfg.overwrite,
                                                flag="--work_dir"), ctx)
        if ctx.is_main:
            if resume is None:
                with atomic_open(trainer.work_dir / LOG_FILE):
                    pass
            else:
                trim_log(trainer.work_dir / LOG_FILE, trainer.step)
                log.info("resuming %s at step %d (epoch %d, batch %d)", resume_path(cfg.resume), trainer.step,
                         *trainer.position)
        _announce(trainer, len(train_ds), len(valid_ds))
        barrier()
        trainer.fit()

