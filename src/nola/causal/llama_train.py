"""Fine-tuning of a ``transformers`` causal LM (LLaMA-2, SmolLM2) with NOLA or LoRA on Alpaca or
data-to-text (:mod:`nola.causal.causal_data`): the loop behind ``src/llama_ft.py``.

One step is one optimiser update (the Hugging Face Trainer's ``max_steps``, as UCDvision/NOLA's
qlora.py counts): every process takes ``gradient_accumulation_steps`` micro-batches of
``per_device_train_batch_size`` examples. The examples of update ``u`` are the ``u``-th block of
``processes x batch x accumulation`` indices of a seeded permutation of the data (one per epoch;
rank ``r`` takes the ``r``-th part of the block), so the data position is a function of the step
alone. The loss is the summed token NLL of the update's response tokens divided by their total
number over all micro-batches and processes, so 2 processes give the gradient of 1 process at
twice the batch, and accumulation the gradient of one big batch. The LM head runs at the target
positions only (:mod:`nola.causal.causal_objective`), and the host waits for the device only when a line is
logged, a validation is run or a save is written (the non-finite check is a flag on the device).

With ``--eval_dataset``, the validation loss (the token-mean NLL of every target token of the file)
is computed every ``--eval_steps`` updates and after the last one, and logged as a row
``{"step", "split": "valid", "loss", "tokens"}``.

Outputs in ``--output_dir``: the adapter folder files (:func:`nola.hf_adapter.save_adapter`), rewritten
every ``--save_steps`` updates and at the end, ``resume.pt`` (:mod:`nola.train.resume`) beside them and
``log.jsonl`` (one row per logged update).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nola.causal.alpaca import collate, pad_token_id
from nola.causal.causal_data import CausalExamples, read_examples
from nola.causal.causal_lm import adapter_config, add_adapter, check_bits, check_source, load_causal_lm
from nola.causal.causal_objective import check_target_logits, target_logits, target_nll_sum, with_loss_positions
from nola.adapters import count_trainable
from nola.config import AdapterRequest, AlpacaTrainConfig, LaunchConfig, LlamaSource, OptimConfig, adapter_kind
from nola.train.distributed import DistContext, all_ranks_sum, barrier, gather_objects, init_distributed, main_decides, rank_share
from nola.errors import fail
from nola.train.faults import NonFinite, guarded_run
from nola.fileio import atomic_open, check_writable
from nola.hf_adapter import CONFIG_FILE, WEIGHTS_FILE, base_identity, save_adapter
from nola.log import get_logger
from nola.train.optim import Schedule, make_optimizer
from nola.causal.peft_baselines import add_peft, config_record, peft_config, save_peft
from nola.train.resume import (RESUME_FILE, load_resume, restore_trainable, resume_path, rng_state, save_resume,
                         set_rng_state)
from nola.train.workdir import append_row, claim, trim_log

log = get_logger(__name__)
LOG_FILE = "log.jsonl"
OUTPUTS = (LOG_FILE, RESUME_FILE, WEIGHTS_FILE, CONFIG_FILE)  # what a run writes in --output_dir
# Settings the data position, schedule and numbers depend on: a resumed run must repeat them.
RUN_KEYS = ("dataset", "source_max_len", "target_max_len", "per_device_train_batch_size",
            "gradient_accumulation_steps", "max_steps", "lr", "lr_scheduler_type", "warmup_steps", "adam_beta1",
            "adam_beta2", "adam_epsilon", "weight_decay", "max_grad_norm", "train_seed")


def optim_config(cfg: AlpacaTrainConfig) -> OptimConfig:
    """The optimiser settings as :mod:`nola.train.optim` takes them (bias-corrected AdamW, as torch / HF)."""
    return OptimConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, correct_bias=True, adam_epsilon=cfg.adam_epsilon,
                       adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, scheduler=cfg.lr_scheduler_type,
                       warmup_step=cfg.warmup_steps, max_step=cfg.max_steps)


def update_indices(num_examples: int, seed: int, step: int, block: int) -> list[int]:
    """Indices of update ``step`` (0-based): block ``step % per_epoch`` of epoch ``step // per_epoch``'s
    permutation (seed + epoch); the tail that fills no block is dropped."""
    per_epoch = num_examples // block
    epoch, slot = divmod(step, per_epoch)
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed + epoch))
    return order[slot * block:(slot + 1) * block].tolist()


def run_record(cfg: AlpacaTrainConfig, source: LlamaSource, adapter: dict, world_size: int) -> dict:
    return {**{k: getattr(cfg, k) for k in RUN_KEYS}, "model_name_or_path": source.model_name_or_path,
            "bits": source.bits, "bf16": source.bf16, "targets": source.targets, "adapter": adapter,
            "world_size": world_size}


def check_resume(state: dict, now: dict, where: str) -> None:
    """The resumed run must repeat the interrupted run's settings (one-line error naming the first)."""
    for key, value in now.items():
        if state["run"].get(key) != value:
            fail(f"--resume {where}: {key} was {state['run'].get(key)!r} in the interrupted run, now {value!r}: "
                 f"resume with the same flags")


class AlpacaTrainer:
    """State and steps of one instruction-tuning run on one process."""

    def __init__(self, cfg: AlpacaTrainConfig, source: LlamaSource, ctx: DistContext, model: nn.Module,
                 data: CausalExamples, valid: CausalExamples | None, pad_id: int, run: dict,
                 resume: dict | None, write_adapter: Callable[[Path], dict]) -> None:
        check_target_logits(model)
        self.cfg, self.source, self.ctx, self.model, self.data, self.pad_id = cfg, source, ctx, model, data, pad_id
        self.write_adapter = write_adapter  # writes the adapter files, returns resume.pt's adapter record
        self.valid = valid
        self.run, self.out = run, Path(cfg.output_dir)
        self.block = ctx.world_size * cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
        if len(data) < self.block:
            fail(f"--dataset {cfg.dataset}: {len(data)} examples fill no update of {self.block} "
                 f"({ctx.world_size} processes x batch x accumulation); lower the batch flags")
        optim = optim_config(cfg)
        self.optimizer = make_optimizer(model, optim)
        self.schedule = Schedule(optim.scheduler, optim.lr, optim.warmup_step, cfg.max_steps)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=False)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.amp = torch.bfloat16 if source.bf16 else None
        self.step, self.saved = 0, None  # saved: the step of the last complete save
        # The first update whose loss was not finite (0: none), kept on the device: no host sync per update.
        self.bad_step = torch.zeros((), dtype=torch.int64, device=ctx.device)
        if resume is not None:
            restore_trainable(model, self.optimizer, self.scaler, resume)
            self.step = self.saved = resume["step"]
            set_rng_state(resume["rng"][ctx.rank], ctx.device)
        self.net = model
        if ctx.world_size > 1:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.net = DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    def _micro_batches(self) -> list[dict[str, torch.Tensor]]:
        cfg = self.cfg
        mine = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
        ids = update_indices(len(self.data), cfg.train_seed, self.step, self.block)
        ids = ids[self.ctx.rank * mine:(self.ctx.rank + 1) * mine]
        size = cfg.per_device_train_batch_size
        return [with_loss_positions(collate([self.data[i] for i in ids[j:j + size]], self.pad_id))
                for j in range(0, mine, size)]

    def _autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=self.amp, enabled=self.amp is not None)

    def update(self) -> torch.Tensor:
        """One optimiser update; returns the update's token-mean loss over all processes, on the device
        (the host reads it only when it is logged)."""
        device = self.ctx.device
        batches = self._micro_batches()
        mine = float(sum(len(b["targets"]) for b in batches))  # counted on the host: no device sync
        tokens = all_ranks_sum(torch.tensor(mine, dtype=torch.float64, device=device)).clamp_min(1.0)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for j, host in enumerate(batches):
            batch = {k: v.to(device) for k, v in host.items()}
            last = j == len(batches) - 1
            sync = contextlib.nullcontext() if last or self.net is self.model else self.net.no_sync()
            with sync:
                with self._autocast():
                    logits = target_logits(self.net, batch)
                nll = target_nll_sum(logits, batch)
                rank_share(nll, tokens, self.ctx.world_size).backward()
            loss_sum += nll.detach()
        lr = self.schedule.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return all_ranks_sum(loss_sum) / tokens

    def check_finite(self) -> None:
        """Raise :class:`NonFinite` naming the first update whose loss was not finite (summed over every
        rank, so every rank stops alike); one host sync."""
        bad = int(self.bad_step.item())
        if bad:
            raise NonFinite(bad)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, int]:
        """(token-mean NLL, token count) of every target token of ``--eval_dataset``; rank ``r`` takes
        examples ``r, r + W, ...``, summed over the ranks."""
        self.model.eval()
        size, device = self.cfg.per_device_eval_batch_size, self.ctx.device
        mine = range(self.ctx.rank, len(self.valid), self.ctx.world_size)
        total = torch.zeros(2, dtype=torch.float64, device=device)
        for start in range(0, len(mine), size):
            host = with_loss_positions(collate([self.valid[i] for i in mine[start:start + size]], self.pad_id))
            batch = {k: v.to(device) for k, v in host.items()}
            with self._autocast():
                logits = target_logits(self.model, batch)
            total[0] += target_nll_sum(logits, batch)
            total[1] += len(host["targets"])
        self.model.train()
        loss_sum, tokens = all_ranks_sum(total).tolist()
        return loss_sum / max(tokens, 1.0), int(tokens)

    def validate(self) -> None:
        start = time.perf_counter()
        loss, tokens = self.evaluate()
        log.info("| valid at step %6d | loss %.4f | ppl %.3f | %d target tokens | %.1fs", self.step, loss,
                 math.exp(min(loss, 700.0)), tokens, time.perf_counter() - start)
        if self.ctx.is_main:
            append_row(self.out / LOG_FILE, {"step": self.step, "split": "valid", "loss": loss, "tokens": tokens})

    def save(self) -> None:
        """The adapter folder and resume.pt at the current step (rank 0 writes; every rank's RNG); never
        of a run whose loss was not finite, nor of non-finite parameters (replicated on every rank, so
        every rank decides alike)."""
        self.check_finite()
        if not all(torch.isfinite(p).all() for p in self.trainable):
            raise NonFinite(self.step, "a trained parameter")
        rngs = gather_objects(rng_state(self.ctx.device), self.ctx)
        if self.ctx.is_main:
            meta = self.write_adapter(self.out)
            save_resume(self.out, meta, {"step": self.step}, self.model, self.optimizer, self.scaler, rngs, self.run)
            log.info("saved the adapter and resume.pt in %s at step %d", self.out, self.step)
        self.saved = self.step
        barrier()

    def fit(self) -> None:
        cfg = self.cfg
        self.model.train()
        while self.step < cfg.max_steps:
            loss = self.update()
            self.bad_step = torch.where((self.bad_step == 0) & ~torch.isfinite(loss), self.step, self.bad_step)
            if self.step % cfg.logging_steps == 0 or self.step == cfg.max_steps:
                value = loss.item()  # the first host sync since the last line
                self.check_finite()
                lr = self.schedule.lr_at(self.step - 1)
                log.info("| step %6d / %d | lr %.3g | loss %.4f", self.step, cfg.max_steps, lr, value)
                if self.ctx.is_main:
                    append_row(self.out / LOG_FILE, {"step": self.step, "lr": lr, "loss": value})
            if self.valid is not None and (self.step % (cfg.eval_steps or cfg.max_steps) == 0
                                           or self.step == cfg.max_steps):
                self.check_finite()
                self.validate()
            halt = cfg.stop_at_step is not None and self.step >= cfg.stop_at_step
            if self.step % cfg.save_steps == 0 or self.step == cfg.max_steps or halt:
                self.save()
            if halt and self.step < cfg.max_steps:
                log.info("stopped at step %d (--stop_at_step); continue with --resume %s", self.step, self.out)
                return
        log.info("end of training at step %d; adapter in %s", self.step, self.out)


def check_same_base(state: dict, model: nn.Module, where: str) -> None:
    """A resumed run trains on the base it started on: the model at --model_name_or_path must have the
    configuration the interrupted run recorded (one-line error otherwise)."""
    recorded = (state.get("base_model") or {}).get("config_sha256")
    now = base_identity(model)
    if recorded is not None and recorded != now["config_sha256"]:
        fail(f"--resume {where}: the interrupted run trained on a base whose configuration differs from "
             f"{now['name_or_path'] or 'the model loaded now'}; resume with the model it started on")


def native_writer(model: nn.Module) -> Callable[[Path], dict]:
    """Saves of a NOLA / LoRA run: the adapter folder (:func:`nola.hf_adapter.save_adapter`)."""
    def write(out: Path) -> dict:
        save_adapter(model, out)
        spec = model.adapter_spec
        return {"adapter": adapter_kind(spec.config), "config": spec.config.to_dict(), "base_model": base_identity(model)}
    return write


def peft_writer(peft_model: nn.Module, model: nn.Module) -> Callable[[Path], dict]:
    """Saves of a PEFT baseline run: PEFT's own adapter folder (:func:`nola.causal.peft_baselines.save_peft`)."""
    def write(out: Path) -> dict:
        save_peft(peft_model, out)
        config = config_record(peft_model.peft_config["default"])
        return {"adapter": "peft", "config": config, "base_model": base_identity(model)}
    return write


def enable_checkpointing(model: nn.Module) -> None:
    """Non-reentrant activation checkpointing of every decoder layer (the frozen embeddings need no
    gradient), under the name this ``transformers`` has."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def train_alpaca(launch: LaunchConfig, source: LlamaSource, request: AdapterRequest, cfg: AlpacaTrainConfig) -> None:
    """Check the flags, then fine-tune as the configs say (``--resume``: continue a run)."""
    check_bits(source, launch.device)
    check_source(source)
    resume = load_resume(cfg.resume) if cfg.resume else None
    if cfg.output_dir is None:
        if cfg.resume is None:
            fail("--output_dir is required (the adapter folder to write)")
        cfg = dataclasses.replace(cfg, output_dir=str(Path(cfg.resume)))
    check_writable(cfg.output_dir, "--output_dir", folder=True)
    if cfg.eval_steps is not None and cfg.eval_dataset is None:
        fail(f"--eval_steps {cfg.eval_steps} needs --eval_dataset (the file whose validation loss it logs)")
    kind, records = read_examples(cfg.dataset)
    valid = read_examples(cfg.eval_dataset, "--eval_dataset") if cfg.eval_dataset else None
    ctx = init_distributed(dataclasses.replace(launch, random_seed=cfg.train_seed))
    with guarded_run(ctx, cfg.output_dir, launch.dist_timeout) as state:
        if request.peft:
            peft_cfg = peft_config(request.peft["method"], request.peft["options"], source.targets)
            method, recorded = f"peft {request.peft['method']}", {"kind": "peft", **request.peft}
        else:
            adapter = adapter_config(request, ctx.device)
            method, recorded = adapter_kind(adapter), {"kind": adapter_kind(adapter), **adapter.to_dict()}
        run = run_record(cfg, source, recorded, ctx.world_size)
        if resume is not None:
            check_resume(resume, run, cfg.resume)
        model, tokenizer = load_causal_lm(source, ctx.device)
        if cfg.gradient_checkpointing:
            enable_checkpointing(model)
        if resume is not None:
            check_same_base(resume, model, cfg.resume)
        if request.peft:
            write = peft_writer(add_peft(model, peft_cfg), model)
        else:
            add_adapter(model, adapter, source)
            write = native_writer(model)
        data = CausalExamples(kind, records, tokenizer, cfg.source_max_len, cfg.target_max_len)
        valid_data = None if valid is None else CausalExamples(*valid, tokenizer, cfg.source_max_len,
                                                               cfg.target_max_len, flag="--eval_dataset")
        trainer = state.trainer = AlpacaTrainer(cfg, source, ctx, model, data, valid_data, pad_token_id(tokenizer),
                                                run, resume, write)
        out = trainer.out
        resumed = resume_path(cfg.resume).parent if cfg.resume else None
        state.lock = main_decides(lambda: claim(out, OUTPUTS, resumed=resumed, overwrite=cfg.overwrite,
                                                flag="--output_dir"), ctx)
        if ctx.is_main:
            if resume is None:
                with atomic_open(out / LOG_FILE):
                    pass
            else:
                trim_log(out / LOG_FILE, trainer.step)
                log.info("resuming %s at step %d", cfg.resume, trainer.step)
        per_epoch = len(data) // trainer.block
        log.info("%d process(es) on %s; %d %s examples, %d updates per epoch of %d examples; %s on %s: %s trainable "
                 "parameters; max_steps %d", ctx.world_size, ctx.device.type, len(data), kind, per_epoch, trainer.block,
                 method, ",".join(source.targets), f"{count_trainable(model):,}", cfg.max_steps)
        if math.ceil(cfg.max_steps / per_epoch) > 1:
            log.info("max_steps %d covers %.2f epochs", cfg.max_steps, cfg.max_steps / per_epoch)
        barrier()
        trainer.fit()
