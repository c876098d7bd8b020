"""Fine-tuning of a ``transformers`` causal LM (LLaMA-2, SmolLM2) with NOLA, LoRA or a PEFT baseline on
Alpaca or data-to-text (:mod:`nola.causal.causal_data`): ``src/llama_ft.py``'s run, a task
(:class:`CausalTask`) of the one loop (:class:`nola.train.trainer.Trainer`).

One step is one optimiser update (the Hugging Face Trainer's ``max_steps``, as UCDvision/NOLA's
qlora.py counts): every process takes ``gradient_accumulation_steps`` micro-batches of
``per_device_train_batch_size`` examples. The examples of update ``u`` are the ``u``-th block of
``processes x batch x accumulation`` indices of a seeded permutation of the data (one per epoch;
rank ``r`` takes the ``r``-th part of the block), so the data position is a function of the step
alone. The loss is the summed token NLL of the update's response tokens divided by their total
number over all micro-batches and processes (counted on the host), so 2 processes give the gradient
of 1 process at twice the batch, and accumulation the gradient of one big batch. The LM head runs at
the target positions only (:mod:`nola.causal.causal_objective`); nothing per micro-batch or update
waits for the device (the Trainer reads its flags only when a line is logged, a validation is run or
a save is written).

With ``--eval_dataset``, the validation loss (the token-mean NLL of every target token of the file)
is computed every ``--eval_steps`` updates and after the last one, and logged as a row
``{"step", "split": "valid", "loss", "tokens"}``.

Outputs in ``--output_dir``: the adapter folder files (:func:`nola.hf_adapter.save_adapter`), rewritten
every ``--save_steps`` updates and at the end, ``resume.pt`` (:mod:`nola.train.resume`) beside them and
``log.jsonl`` (one row per logged update).
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from nola.adapters import count_trainable
from nola.causal.alpaca import collate, pad_token_id
from nola.causal.causal_data import CausalExamples, read_examples
from nola.causal.causal_lm import adapter_config, add_adapter, check_bits, check_source, load_causal_lm
from nola.causal.causal_objective import check_target_logits, target_logits, target_nll_sum, with_loss_positions
from nola.causal.peft_baselines import add_peft, config_record, peft_config, save_peft
from nola.config import AdapterRequest, AlpacaTrainConfig, LaunchConfig, LlamaSource, OptimConfig, adapter_kind
from nola.errors import fail
from nola.fileio import check_writable
from nola.hf_adapter import CONFIG_FILE, WEIGHTS_FILE, base_identity, check_base, save_adapter
from nola.log import get_logger
from nola.train.distributed import DistContext, all_ranks_sum, barrier, init_distributed
from nola.train.faults import guarded_run
from nola.train.optim import Schedule, make_optimizer
from nola.train.resume import RESUME_FILE, load_resume
from nola.train.trainer import LOG_FILE, Cadence, Step, Trainer, autocast, check_run, output_folder

log = get_logger(__name__)
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


class CausalTask:
    """What :class:`nola.train.trainer.Trainer` needs of an ``llama_ft.py`` run: a step is one update of
    ``gradient_accumulation_steps`` micro-batches."""

    steps_per_update, scale_loss = 1, False

    def __init__(self, cfg: AlpacaTrainConfig, source: LlamaSource, ctx: DistContext, model: nn.Module,
                 data: CausalExamples, valid: CausalExamples | None, pad_id: int, run: dict,
                 write_adapter: Callable[[Path], dict]) -> None:
        check_target_logits(model)
        self.cfg, self.ctx, self.model, self.net, self.data, self.valid = cfg, ctx, model, model, data, valid
        self.pad_id, self.run, self.work_dir = pad_id, run, Path(cfg.output_dir)
        self.write_adapter = write_adapter  # writes the adapter files, returns resume.pt's metadata block
        self.block = ctx.world_size * cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
        if len(data) < self.block:
            fail(f"--dataset {cfg.dataset}: {len(data)} examples fill no update of {self.block} "
                 f"({ctx.world_size} processes x batch x accumulation); lower the batch flags")
        optim = optim_config(cfg)
        self.optimizer = make_optimizer(model, optim)
        self.schedule = Schedule(optim.scheduler, optim.lr, optim.warmup_step, cfg.max_steps)
        self.max_step, self.clip = cfg.max_steps, cfg.max_grad_norm
        self.amp_dtype = torch.bfloat16 if source.bf16 else None
        self.cadence = Cadence(log_every=cfg.logging_steps, save_every=cfg.save_steps, stop_at=cfg.stop_at_step,
                               log_last=True, validates=valid is not None, eval_every=cfg.eval_steps)

    def _batches(self, examples: CausalExamples, ids) -> dict[str, torch.Tensor]:
        return with_loss_positions(collate([examples[i] for i in ids], self.pad_id))

    def steps(self, step: int) -> Iterator[Step]:
        cfg = self.cfg
        mine, size = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps, cfg.per_device_train_batch_size
        for update in range(step, self.max_step):
            ids = update_indices(len(self.data), cfg.train_seed, update, self.block)
            ids = ids[self.ctx.rank * mine:(self.ctx.rank + 1) * mine]
            batches = [self._batches(self.data, ids[j:j + size]) for j in range(0, mine, size)]
            yield Step(batches, sum(len(b["targets"]) for b in batches))  # counted on the host: no device sync

    def loss_sum(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return target_nll_sum(target_logits(net, batch), batch)

    def denominator(self, count: torch.Tensor) -> torch.Tensor:
        return count.clamp_min(1.0)

    def lr_at(self, step: int) -> float:
        return self.schedule.lr_at(step)

    def train_row(self, step: int, lr: float, loss: float, avg: float, ms: float) -> dict:
        log.info("| step %6d / %d | lr %.3g | loss %.4f", step, self.max_step, lr, loss)
        return {"step": step, "lr": lr, "loss": loss}

    @torch.no_grad()
    def _validation_loss(self) -> tuple[float, int]:
        """(token-mean NLL, token count) of every target token of ``--eval_dataset``; rank ``r`` takes
        examples ``r, r + W, ...``, summed over the ranks."""
        self.model.eval()
        size, device = self.cfg.per_device_eval_batch_size, self.ctx.device
        mine = range(self.ctx.rank, len(self.valid), self.ctx.world_size)
        total = torch.zeros(2, dtype=torch.float64, device=device)
        for start in range(0, len(mine), size):
            host = self._batches(self.valid, mine[start:start + size])
            batch = {k: v.to(device) for k, v in host.items()}
            with autocast(device, self.amp_dtype):
                logits = target_logits(self.model, batch)
            total[0] += target_nll_sum(logits, batch)
            total[1] += len(host["targets"])
        self.model.train()
        loss_sum, tokens = all_ranks_sum(total).tolist()
        return loss_sum / max(tokens, 1.0), int(tokens)

    def evaluate(self, step: int) -> dict:
        start = time.perf_counter()
        loss, tokens = self._validation_loss()
        log.info("| valid at step %6d | loss %.4f | ppl %.3f | %d target tokens | %.1fs", step, loss,
                 math.exp(min(loss, 700.0)), tokens, time.perf_counter() - start)
        return {"loss": loss, "tokens": tokens}

    def save(self, step: int, new: bool) -> dict:
        meta = self.write_adapter(self.work_dir)
        log.info("saved the adapter in %s at step %d (resume.pt next)", self.work_dir, step)
        return meta

    def position(self) -> dict:
        return {}  # the step is the data position (update_indices)

    def restore(self, state: dict) -> None:
        pass


def check_same_base(state: dict, model: nn.Module, where: str) -> None:
    """A resumed run trains on the base it started on: the model at --model_name_or_path must be the one
    the interrupted run recorded (:func:`nola.hf_adapter.check_base`; one-line error otherwise)."""
    recorded = state.get("base_model")
    if recorded is not None:
        check_base(recorded, base_identity(model), f"--resume {where}",
                   "the interrupted run trained on another base: resume with the --model_name_or_path it started on")


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
    cfg = dataclasses.replace(cfg, output_dir=output_folder(cfg.output_dir, cfg.resume, "--output_dir",
                                                            "the adapter folder to write"))
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
            check_run(resume, run, cfg.resume)
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
        task = CausalTask(cfg, source, ctx, model, data, valid_data, pad_token_id(tokenizer), run, write)
        trainer = Trainer(task, ctx, resume)
        trainer.open(state, flag="--output_dir", outputs=OUTPUTS, resume=cfg.resume, overwrite=cfg.overwrite)
        per_epoch = len(data) // task.block
        log.info("%d process(es) on %s; %d %s examples, %d updates per epoch of %d examples; %s on %s: %s trainable "
                 "parameters; max_steps %d", ctx.world_size, ctx.device.type, len(data), kind, per_epoch, task.block,
                 method, ",".join(source.targets), f"{count_trainable(model):,}", cfg.max_steps)
        if math.ceil(cfg.max_steps / per_epoch) > 1:
            log.info("max_steps %d covers %.2f epochs", cfg.max_steps, cfg.max_steps / per_epoch)
        barrier()
        trainer.fit()
