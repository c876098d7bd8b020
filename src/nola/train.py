"""The fine-tuning loop behind ``src/gpt2_ft.py``: microsoft/LoRA's NLG training, with NOLA.

One step is one batch per process, as in the original: the learning rate follows the batch count,
the optimiser updates every ``--grad_acc`` batches, and ``max_step`` defaults to
``ceil(max_epoch · ceil(N / batch) / world_size)``. Under several processes the model is wrapped in
DistributedDataParallel (gradients averaged) and each rank trains its own shard of every epoch.

Outputs in ``--work_dir``: ``model.<step>.pt`` (the compact adapter file, or a full state dict with
``--save_full``) every ``--save_interval`` steps and at each epoch end, ``resume.pt`` (see
:mod:`nola.resume`) alongside, and ``log.jsonl`` with one row per log line and per validation.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from nola.build import BuiltModel, build_model, model_config
from nola.checkpoint import adapter_kind, save_adapter
from nola.data import FTDataset, make_loader
from nola.distributed import DistContext, barrier, cleanup, gather_objects, init_distributed
from nola.errors import fail
from nola.fileio import atomic_open
from nola.layers import NOLAConfig
from nola.log import get_logger
from nola.model import lm_loss
from nola.optim import Schedule, add_optimizer_args, cycle_knots, make_optimizer
from nola.resume import (RUN_KEYS, adopt_resume_flags, check_resume_world, load_resume, resume_path,
                         rng_state, save_resume, set_rng_state, trim_log)
from nola.sizes import adapter_file_bytes

log = get_logger(__name__)
LOG_FILE = "log.jsonl"


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """Data, objective, precision, logging and checkpoint flags (microsoft/LoRA's names), plus
    the optimiser flags of :func:`nola.optim.add_optimizer_args`."""
    g = parser.add_argument_group("training")
    g.add_argument("--train_data", required=True, help="encoded training jsonl (create_datasets.sh)")
    g.add_argument("--valid_data", required=True, help="encoded validation jsonl")
    g.add_argument("--train_batch_size", type=int, default=8, help="batch per process")
    g.add_argument("--valid_batch_size", type=int, default=4)
    g.add_argument("--grad_acc", type=int, default=1, help="batches per optimiser update")
    g.add_argument("--clip", type=float, default=0.0, help="max gradient norm (0: no clipping)")
    g.add_argument("--seq_len", type=int, default=512, help="tokens per training example")
    g.add_argument("--obj", default="clm", choices=("clm", "jlm"),
                   help="clm: loss on the completion only; jlm: joint LM, loss on context and completion")
    g.add_argument("--label_smooth", type=float, default=0.0, help="label smoothing of the training loss")
    g.add_argument("--fp16", action="store_true",
                   help="mixed precision: fp16 autocast + loss scaling on CUDA, bf16 autocast on CPU")
    g.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA with bf16 support, or CPU)")

    o = parser.add_argument_group("logging and checkpoints")
    o.add_argument("--log_interval", type=int, default=100, help="steps per training log line")
    o.add_argument("--eval_interval", type=int, default=2000, help="steps per validation")
    o.add_argument("--eval_epoch", type=int, default=1, help="validate at the end of every N-th epoch")
    o.add_argument("--save_interval", type=int, default=500, help="steps per checkpoint")
    o.add_argument("--work_dir", default=None,
                   help="folder for model.<step>.pt, resume.pt and log.jsonl (default: the --resume "
                        "folder, else $PT_OUTPUT_DIR, else gpt2_model)")
    o.add_argument("--save_full", action="store_true",
                   help="checkpoints hold the full state dict (as the original code), not just the adapter")
    o.add_argument("--resume", default=None, metavar="WORK_DIR",
                   help="continue the interrupted run saved in WORK_DIR (or its resume.pt)")
    o.add_argument("--stop_at_step", type=int, default=None,
                   help="end this session after this step with a checkpoint, schedule unchanged; "
                        "continue later with --resume")
    add_optimizer_args(parser)


def check_args(args: argparse.Namespace) -> None:
    """Flag checks that need no file: one-line errors before any work."""
    positive = ("train_batch_size", "valid_batch_size", "grad_acc", "seq_len", "log_interval",
                "eval_interval", "eval_epoch", "save_interval")
    for name in positive:
        if getattr(args, name) < 1:
            fail(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in ("max_step", "max_epoch", "stop_at_step"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            fail(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.max_step is None and args.max_epoch is None and args.scheduler != "cycle":
        fail("give --max_epoch (as the paper's commands do) or --max_step")
    if args.warmup_step < 0 or args.clip < 0:
        fail("--warmup_step and --clip must not be negative")
    if not 0.0 <= args.label_smooth < 1.0:
        fail(f"--label_smooth {args.label_smooth} must be in [0, 1)")
    if args.fp16 and args.bf16:
        fail("--fp16 and --bf16 exclude each other: choose one")
    if args.scheduler == "cycle":
        cycle_knots(args.i_steps, args.i_lrs)


def default_max_step(args: argparse.Namespace, num_examples: int, world_size: int) -> int:
    """``--max_step``, else the last ``--i_steps`` knot (cycle), else the original's
    ``ceil(max_epoch · ceil(N / batch) / world_size)``."""
    if args.max_step is not None:
        return args.max_step
    if args.scheduler == "cycle":
        return cycle_knots(args.i_steps, args.i_lrs)[-1][0]
    batches = math.ceil(num_examples / args.train_batch_size)
    return (args.max_epoch * batches + world_size - 1) // world_size


class JointLM(Dataset):
    """``--obj jlm``: the loss covers every real target token, context included (original's joint_lm)."""

    def __init__(self, dataset: FTDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.dataset[index]
        ds = self.dataset
        real = min(len(ds.contexts[index]) + len(ds.completions[index]), ds.seq_len) - 1
        item["mask"] = (torch.arange(ds.seq_len) < real).float()
        return item


def _precision(args: argparse.Namespace, device: torch.device) -> tuple[torch.dtype | None, bool]:
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

    def __init__(self, args: argparse.Namespace, ctx: DistContext, built: BuiltModel, train_ds: Dataset,
                 valid_ds: Dataset, resume: dict | None) -> None:
        self.args, self.ctx, self.device = args, ctx, ctx.device
        self.model, self.base_path, self.base_sha = built.model, built.base_path, built.base_sha256
        self.work_dir = Path(args.work_dir)
        self.train_ds = train_ds
        self.loader = make_loader(train_ds, args.train_batch_size, shuffle=True, seed=args.random_seed,
                                  rank=ctx.rank, world_size=ctx.world_size, drop_last=True)
        if len(self.loader) == 0:
            fail(f"--train_data {args.train_data}: {len(train_ds)} examples make no full batch of "
                 f"{args.train_batch_size} on each of {ctx.world_size} processes; lower --train_batch_size")
        shard = Subset(valid_ds, range(ctx.rank, len(valid_ds), ctx.world_size))
        self.valid_loader = DataLoader(shard, batch_size=args.valid_batch_size, shuffle=False)
        self.max_step = default_max_step(args, len(train_ds), ctx.world_size)
        knots = cycle_knots(args.i_steps, args.i_lrs) if args.scheduler == "cycle" else ()
        self.schedule = Schedule(args.scheduler, args.lr, args.warmup_step, self.max_step, knots)
        self.amp_dtype, scale = _precision(args, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=scale)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.model, args)
        self.full = args.save_full or adapter_kind(self.model) is None
        self.step, self.position, self.best_ppl, self.rng = 0, (1, 0), None, None
        if resume is not None:
            self._restore(resume)
        self.net = self.model
        if ctx.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids, broadcast_buffers=False)
        self.last_model_step = self.step if resume is not None else -1
        self.last_valid_step = -1

    # --- resume -------------------------------------------------------------------------------
    def _restore(self, state: dict) -> None:
        saved = state["trainable"]
        live = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if set(saved) != set(live) or any(saved[n].shape != p.shape for n, p in live.items()):
            fail("--resume: the saved trainable tensors do not fit this model; use the interrupted run's flags")
        with torch.no_grad():
            for name, param in live.items():
                param.copy_(saved[name])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.best_ppl = state["step"], state["best_ppl"]
        self.position = (state["epoch"], state["batch"])
        self.rng = state["rng"][self.ctx.rank]

    def _resume_state(self, epoch: int, batch: int, rngs: list) -> dict:
        cfg = self.model.nola_config or self.model.lora_config
        return {
            "step": self.step, "epoch": epoch, "batch": batch, "best_ppl": self.best_ppl,
            "trainable": {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad},
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "rng": rngs,
            "adapter": adapter_kind(self.model), "adapter_config": cfg.to_dict() if cfg else None,
            "base": {"path": self.base_path, "sha256": self.base_sha},
            "model_config": self.model.config.to_dict(),
            "run": {**{k: getattr(self.args, k) for k in RUN_KEYS}, "world_size": self.ctx.world_size},
        }

    # --- outputs ------------------------------------------------------------------------------
    def _row(self, **row) -> None:
        if self.ctx.is_main:
            with open(self.work_dir / LOG_FILE, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")

    def save(self, epoch: int, batch: int) -> None:
        """``model.<step>.pt`` (once per step) and ``resume.pt`` at position (epoch, batch)."""
        rngs = gather_objects(rng_state(self.device), self.ctx)
        if self.ctx.is_main:
            if self.step != self.last_model_step:
                path = self.work_dir / f"model.{self.step}.pt"
                size = save_adapter(self.model, path, self.base_path, self.base_sha, self.step, full=self.full)
                log.info("saved %s: %s bytes (%.1f KB)%s", path, f"{size:,}", size / 1024,
                         ", full state dict" if self.full else "")
            save_resume(self._resume_state(epoch, batch, rngs), self.work_dir)
        self.last_model_step = self.step
        barrier()

    # --- steps --------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def train_batch(self, batch: dict[str, torch.Tensor], update: bool, lr: float) -> float:
        """Forward/backward of one batch; an optimiser update when ``update``. Returns the loss."""
        inp, tgt, mask = (batch[k].to(self.device) for k in ("input", "target", "mask"))
        no_sync = self.net.no_sync() if (not update and self.net is not self.model) else contextlib.nullcontext()
        with no_sync:
            with self._autocast():
                logits, _ = self.net(inp)
            loss = lm_loss(logits, tgt, mask, self.args.label_smooth)
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
        return loss.item()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Token-averaged loss (no smoothing, completion tokens) over the whole validation set; ppl."""
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        for batch in self.valid_loader:
            inp, tgt, mask = (batch[k].to(self.device) for k in ("input", "target", "mask"))
            with self._autocast():
                logits, _ = self.model(inp)
            nll = F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), reduction="none")
            total[0] += (nll * mask.flatten()).sum()
            total[1] += mask.sum()
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
        meter, tick = [0.0, 0], time.perf_counter()
        while args.max_epoch is None or epoch <= args.max_epoch:
            self.loader.sampler.set_epoch(epoch)
            done = False
            for idx, ids in enumerate(itertools.islice(self.loader.batch_sampler, skip, None), start=skip):
                batch = self.loader.collate_fn([self.train_ds[i] for i in ids])
                self.step += 1
                lr = self.schedule.lr_at(self.step - 1)
                loss = self.train_batch(batch, update=self.step % args.grad_acc == 0, lr=lr)
                meter[0] += loss
                meter[1] += 1
                bar.update(1)
                if self.step % args.log_interval == 0:
                    self._log_train(epoch, idx + 1, lr, loss, meter, time.perf_counter() - tick)
                    meter, tick = [0.0, 0], time.perf_counter()
                done = self.step >= self.max_step
                halt = args.stop_at_step is not None and self.step >= args.stop_at_step
                if not done and (halt or self.step % args.save_interval == 0):
                    self.save(epoch, idx + 1)
                if not done and self.step % args.eval_interval == 0:
                    self.validate()
                if halt and not done:
                    log.info("stopped at step %d (--stop_at_step); continue with --resume %s", self.step,
                             self.work_dir)
                    return
                if done:
                    break
            if done or epoch % args.eval_epoch == 0:
                self.validate()
            self.save(epoch + 1, 0)
            if done:
                break
            epoch, skip = epoch + 1, 0
        log.info("end of training at step %d", self.step)
        log.info("training log: %s (plot: python scripts/plot_log.py %s)", self.work_dir / LOG_FILE, self.work_dir)

    def _log_train(self, epoch: int, batches: int, lr: float, loss: float, meter: list, elapsed: float) -> None:
        sums = torch.tensor(meter, dtype=torch.float64, device=self.device)
        if dist.is_initialized():
            dist.all_reduce(sums)
        avg = (sums[0] / sums[1]).item()
        ms = elapsed * 1000 / meter[1]
        ppl = math.exp(min(avg, 700.0))
        log.info("| epoch %3d step %8d | %6d batches | lr %.3g | ms/batch %7.2f | loss %6.3f | avg loss %6.3f "
                 "| ppl %9.3f", epoch, self.step, batches, lr, ms, loss, avg, ppl)
        self._row(step=self.step, split="train", lr=lr, loss=loss, avg_loss=avg, ppl=ppl, ms_per_batch=ms)


def _datasets(args: argparse.Namespace, vocab_size: int) -> tuple[Dataset, Dataset]:
    train_ds = FTDataset(args.train_data, args.seq_len, vocab_size=vocab_size)
    valid_ds = FTDataset(args.valid_data, args.seq_len, vocab_size=vocab_size)
    return (JointLM(train_ds) if args.obj == "jlm" else train_ds), valid_ds


def _announce(trainer: Trainer, num_train: int, num_valid: int) -> None:
    args, model, ctx = trainer.args, trainer.model, trainer.ctx
    precision = {None: "fp32", torch.float16: "fp16 autocast", torch.bfloat16: "bf16 autocast"}[trainer.amp_dtype]
    log.info("%d process(es) on %s, %s; %d training / %d validation examples; %d batches per epoch per "
             "process; max_step %d", ctx.world_size, trainer.device.type, precision, num_train, num_valid,
             len(trainer.loader), trainer.max_step)
    adapter = model.nola_config or model.lora_config
    if adapter is None:
        log.info("no adapter: checkpoints hold the full state dict")
        return
    size, _ = adapter_file_bytes(model.config, adapter, trainer.base_path, trainer.base_sha, trainer.max_step)
    bits = f"{adapter.qbits}-bit codes" if isinstance(adapter, NOLAConfig) and adapter.qbits else "fp32"
    log.info("adapter file model.<step>.pt: about %s bytes (%.1f KB, %s)%s", f"{size:,}", size / 1024, bits,
             "; --save_full writes full state dicts instead" if args.save_full else "")


def train(args: argparse.Namespace) -> None:
    """Validate everything, then fine-tune as the flags say."""
    resume = load_resume(args.resume) if args.resume else None
    if resume is not None:
        adopt_resume_flags(args, resume)
    if args.work_dir is None:
        args.work_dir = str(resume_path(args.resume).parent) if resume else os.getenv("PT_OUTPUT_DIR", "gpt2_model")
    check_args(args)
    ctx = init_distributed(args)
    try:
        if resume is not None:
            check_resume_world(resume, ctx.world_size)
        train_ds, valid_ds = _datasets(args, model_config(args.model_card).vocab_size)
        built = build_model(args, ctx.device)
        if resume is not None and resume["base"]["sha256"] != built.base_sha256:
            fail(f"--init_checkpoint {args.init_checkpoint}: not the base the interrupted run trained on "
                 f"({resume['base']['path']}); pass that file")
        trainer = Trainer(args, ctx, built, train_ds, valid_ds, resume)
        if ctx.is_main:
            trainer.work_dir.mkdir(parents=True, exist_ok=True)
            if resume is None:
                with atomic_open(trainer.work_dir / LOG_FILE):
                    pass
            else:
                trim_log(trainer.work_dir / LOG_FILE, trainer.step)
                log.info("resuming %s at step %d (epoch %d, batch %d)", resume_path(args.resume), trainer.step,
                         *trainer.position)
        _announce(trainer, len(train_ds), len(valid_ds))
        barrier()
        trainer.fit()
    except KeyboardInterrupt:
        log.warning("interrupted; continue from the last checkpoint with --resume %s", args.work_dir)
        raise SystemExit(130) from None
    finally:
        cleanup()
