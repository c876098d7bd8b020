"""``src/gpt2_ft.py``'s run: microsoft/LoRA's NLG training, with NOLA, as a task of the one loop
(:class:`nola.train.trainer.Trainer`).

One step is one batch per process, as in the original: the learning rate follows the batch count,
the optimiser updates every ``--grad_acc`` batches (``steps_per_update``), the log, validation and
save intervals and ``--stop_at_step`` count batches, and ``max_step`` defaults to
``ceil(max_epoch · ceil(N / batch) / world_size)``. Each rank trains its own shard of every epoch:
with W processes at batch b, rank r's k-th batch holds entries ``W·(k·b + i) + r`` (i < b) of the
epoch's permutation, so the ranks' batches interleaved are one process's k-th batch of W·b. Each
batch's loss is divided by its target-token count over all ranks (+ 1e-4, the original's), so W
processes at batch b train as one at batch W·b (with ``--grad_acc``: batch by batch, as one process
averages its batches' means); the original divides by each rank's own count, the same only for W = 1.
Every epoch end validates (each ``--eval_epoch``-th) and saves; the data position is (epoch, batches
of it trained).

Outputs in ``--work_dir``: ``model.<step>/`` (the adapter folder, :mod:`nola.hf_adapter`), or
``model.<step>.pt`` (a full state dict) with ``--save_full``, every ``--save_interval`` steps and at
each epoch end, ``resume.pt`` (see :mod:`nola.train.resume`) alongside, and ``log.jsonl`` with one row per log line and per validation.
The run holds ``--work_dir`` for itself (:func:`nola.train.workdir.claim`) and ends on a fault (full disk,
lost processes, non-finite loss) with one line and no damaged file (:mod:`nola.train.faults`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset

from nola.config import AdapterRequest, LaunchConfig, ModelSource, NOLAConfig, OptimConfig, TrainConfig
from nola.errors import fail
from nola.fileio import check_writable
from nola.gpt2.build import BuiltModel, build_model, model_config
from nola.gpt2.checkpoint import check_metadata, metadata, save_checkpoint
from nola.gpt2.dataset import make_loader, training_datasets, trim_collate
from nola.gpt2.dropout import pad_dropout_to
from nola.gpt2.objective import MaskedLM, masked_nll_sum
from nola.gpt2.resume import adopt_resume, resume_source, run_record
from nola.gpt2.sizes import adapter_file_bytes
from nola.log import get_logger
from nola.train.distributed import DistContext, barrier, init_distributed
from nola.train.faults import guarded_run
from nola.train.optim import Schedule, cycle_knots, make_optimizer
from nola.train.resume import RESUME_FILE, check_resume_world, load_resume
from nola.train.trainer import LOG_FILE, Cadence, EpochEnd, Step, Trainer, autocast, resumed_folder

log = get_logger(__name__)
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


class GPT2Task:
    """What :class:`nola.train.trainer.Trainer` needs of a ``gpt2_ft.py`` run: a step is one batch."""

    def __init__(self, args: TrainConfig, optim: OptimConfig, seed: int, ctx: DistContext, built: BuiltModel,
                 train_ds: Dataset, valid_ds: Dataset) -> None:
        self.args, self.optim, self.ctx, self.device = args, optim, ctx, ctx.device
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
        self.amp_dtype, self.scale_loss = _precision(args, self.device)
        self.optimizer = make_optimizer(self.model, optim)
        self.steps_per_update, self.clip = args.grad_acc, args.clip
        self.cadence = Cadence(log_every=args.log_interval, save_every=args.save_interval, stop_at=args.stop_at_step,
                               validates=True, eval_every=args.eval_interval)
        self.run = run_record(args, seed, ctx.world_size)
        self.full = args.save_full or self.model.adapter is None
        self.epoch, self.batch, self.best_ppl = 1, 0, None  # the data position: batches of the epoch trained
        pad_dropout_to(self.model, args.seq_len)  # LoRA dropout masks as the padded batches draw them
        self.net = MaskedLM(self.model)

    def steps(self, step: int) -> Iterator[Step | EpochEnd]:
        skip = self.batch
        while self.optim.max_epoch is None or self.epoch <= self.optim.max_epoch:
            self.loader.sampler.set_epoch(self.epoch)
            # Each epoch's DataLoader iterator draws a base seed from the global RNG, as the original's
            # does; a run resumed mid-epoch restored a state that already holds that draw.
            with torch.random.fork_rng(devices=[]) if skip else contextlib.nullcontext():
                batches = iter(self.loader)
            for index, batch in enumerate(itertools.islice(batches, skip, None), start=skip):
                self.batch = index + 1
                yield Step([batch], batch["mask"].sum())
            self.epoch, self.batch, skip = self.epoch + 1, 0, 0
            yield EpochEnd(validate=(self.epoch - 1) % self.args.eval_epoch == 0)

    def loss_sum(self, net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return net(batch["input"], batch["target"], batch["mask"], batch["positions"], self.args.label_smooth)

    def denominator(self, count: torch.Tensor) -> torch.Tensor:
        return count + 1e-4  # microsoft/LoRA's Σmask + 1e-4 (nola.gpt2.model.lm_loss)

    def lr_at(self, step: int) -> float:
        return self.schedule.lr_at(step)

    def train_row(self, step: int, lr: float, loss: float, avg: float, ms: float) -> dict:
        ppl = math.exp(min(avg, 700.0))
        log.info("| epoch %3d step %8d | %6d batches | lr %.3g | ms/batch %7.2f | loss %6.3f | avg loss %6.3f "
                 "| ppl %9.3f", self.epoch, step, self.batch, lr, ms, loss, avg, ppl)
        return {"step": step, "split": "train", "lr": lr, "loss": loss, "avg_loss": avg, "ppl": ppl,
                "ms_per_batch": ms}

    @torch.no_grad()
    def _validation_loss(self) -> tuple[float, float]:
        """Token-averaged loss (no smoothing, completion tokens) over the whole validation set; ppl."""
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        for batch in self.valid_loader:
            on_device = {k: batch[k].to(self.device) for k in ("input", "target", "mask", "positions")}
            with autocast(self.device, self.amp_dtype):
                nll, count = masked_nll_sum(self.model, on_device)
            total[0] += nll
            total[1] += count
        if dist.is_initialized():
            dist.all_reduce(total)
        self.model.train()
        loss = (total[0] / total[1].clamp_min(1)).item()
        return loss, math.exp(min(loss, 700.0))

    def evaluate(self, step: int) -> dict:
        start = time.perf_counter()
        loss, ppl = self._validation_loss()
        self.best_ppl = ppl if self.best_ppl is None else min(self.best_ppl, ppl)
        log.info("| valid at step %8d | loss %6.3f | ppl %9.3f | best ppl %9.3f | %.1fs", step, loss, ppl,
                 self.best_ppl, time.perf_counter() - start)
        return {"loss": loss, "ppl": ppl}

    def save(self, step: int, new: bool) -> dict:
        """The adapter folder ``model.<step>/`` (``model.<step>.pt`` with ``--save_full``), once per step;
        the metadata block of resume.pt."""
        if new:
            path, size = save_checkpoint(self.model, self.work_dir, self.base_path, self.base_sha, step,
                                         full=self.full)
            log.info("saved %s: %s bytes (%.1f KB)%s", path, f"{size:,}", size / 1024,
                     ", full state dict" if self.full else "")
        return metadata(self.model, self.base_path, self.base_sha)

    def position(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "best_ppl": self.best_ppl}

    def restore(self, state: dict) -> None:
        self.epoch, self.batch, self.best_ppl = state["epoch"], state["batch"], state["best_ppl"]


def _announce(task: GPT2Task, num_train: int, num_valid: int) -> None:
    args, model, ctx = task.args, task.model, task.ctx
    precision = {None: "fp32", torch.float16: "fp16 autocast", torch.bfloat16: "bf16 autocast"}[task.amp_dtype]
    log.info("%d process(es) on %s, %s; %d training / %d validation examples; %d batches per epoch per "
             "process; max_step %d", ctx.world_size, task.device.type, precision, num_train, num_valid,
             len(task.loader), task.max_step)
    adapter = model.adapter
    if adapter is None:
        log.info("no adapter: checkpoints hold the full state dict")
        return
    size, _ = adapter_file_bytes(model.config, adapter, task.base_path, task.base_sha, task.max_step)
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
        cfg = dataclasses.replace(cfg, work_dir=resumed_folder(cfg.resume) or os.getenv("PT_OUTPUT_DIR", "gpt2_model"))
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
        task = GPT2Task(cfg, optim, launch.random_seed, ctx, built, train_ds, valid_ds)
        trainer = Trainer(task, ctx, resume)
        trainer.open(state, flag="--work_dir", outputs=OUTPUTS, resume=cfg.resume, overwrite=cfg.overwrite)
        _announce(task, len(train_ds), len(valid_ds))
        barrier()
        trainer.fit()

