"""The k-shot fine-tuning loop behind ``src/vit_ft.py`` (UCDvision/NOLA vit/train_timm.py's recipe).

Adam without weight decay over the trained tensors, the learning rate of
``CosineAnnealingLR(T_max=epochs, eta_min=min_lr)`` stepped per epoch, cross-entropy with label
smoothing, fp16 autocast with loss scaling (``--fp16``), batches of ``--batch_size`` with the
last incomplete one of each epoch dropped, evaluation on the whole ``val/`` folder after the last
epoch. Step ``s`` is batch ``s % per_epoch`` of epoch ``s // per_epoch``, whose order is a
permutation seeded by (``--seed``, epoch), and every image's augmentation is seeded by its place
(:mod:`nola.vit.transforms`), so the data position is a function of the step and ``--resume`` is
exact.

Outputs in ``--outdir``: ``trained.safetensors`` (the trained tensors: α/β or LoRA's A/B, and the
head; the whole model with ``full``) and ``result.json`` at the end, ``resume.pt`` at every epoch's
end (and at ``--stop_at_step``), ``log.jsonl`` (one row per step).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nola.adapters import count_trainable
from nola.config import LaunchConfig, ViTConfig
from nola.train.distributed import DistContext, init_distributed
from nola.errors import fail
from nola.train.faults import NonFinite, guarded_run
from nola.fileio import atomic_open, check_writable
from nola.log import get_logger
from nola.train.resume import RESUME_FILE, load_resume, restore_trainable, resume_path, rng_state, save_resume, set_rng_state
from nola.vit.folder import ImageSet, Sample, check_images, kshot, load_rgb, scan
from nola.vit.model import build, head_count, input_size, trained_state
from nola.vit.transforms import Transform, EvalTransform, official_augmentation, sample_seed, seeded
from nola.train.workdir import append_row, claim, start_log

log = get_logger(__name__)
LOG_FILE, RESULT_FILE, TRAINED_FILE = "log.jsonl", "result.json", "trained.safetensors"
OUTPUTS = (LOG_FILE, RESULT_FILE, TRAINED_FILE, RESUME_FILE)
# Settings that are no part of a run's numbers: the rest must repeat on --resume.
NOT_RUN_KEYS = ("outdir", "resume", "stop_at_step", "overwrite", "num_workers", "eval_batch_size")


def cosine_lr(epoch: int, epochs: int, lr: float, min_lr: float) -> float:
    """``CosineAnnealingLR(T_max=epochs, eta_min=min_lr)`` at ``epoch`` (0-based), in closed form."""
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs)) / 2


class Images(Dataset):
    """Samples -> (image tensor, label). A training item is (epoch, position, sample index): its
    augmentation is seeded by (run seed, epoch, position); an evaluation item is a sample index."""

    def __init__(self, samples: list[Sample], transform: Transform, seed: int = 0) -> None:
        self.samples, self.transform, self.seed = samples, transform, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        if isinstance(item, tuple):
            epoch, position, index = item
            path, label = self.samples[index]
            with seeded(sample_seed(self.seed, epoch, position)):
                return self.transform(load_rgb(path)), label
        path, label = self.samples[item]
        return self.transform(load_rgb(path)), label


def step_items(num_samples: int, batch: int, seed: int, step: int) -> list[tuple[int, int, int]]:
    """(epoch, position, sample index) of the images of ``step`` (0-based)."""
    per_epoch = num_samples // batch
    epoch, slot = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (1 << 63))
    order = torch.randperm(num_samples, generator=generator)
    return [(epoch, p, order[p].item()) for p in range(slot * batch, (slot + 1) * batch)]


class ViTTrainer:
    """State and steps of one k-shot run on one process."""

    def __init__(self, cfg: ViTConfig, ctx: DistContext, model: nn.Module, train_set: ImageSet, augment: Transform,
                 run: dict, resume: dict | None) -> None:
        self.cfg, self.ctx, self.model, self.train_set, self.run = cfg, ctx, model, train_set, run
        self.out = Path(cfg.outdir)
        self.per_epoch = len(train_set.samples) // cfg.batch_size
        if self.per_epoch == 0:
            fail(f"--batch_size {cfg.batch_size}: the {len(train_set.samples)} training images fill no batch; "
                 f"lower --batch_size or raise --kshot")
        self.max_steps = cfg.epochs * self.per_epoch
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.trainable, lr=cfg.lr)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.fp16)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.data = Images(train_set.samples, augment, cfg.seed)
        self.step, self.saved = 0, None
        if resume is not None:
            restore_trainable(model, self.optimizer, self.scaler, resume)
            self.step = self.saved = resume["step"]
            set_rng_state(resume["rng"][0], ctx.device)

    def lr_at(self, step: int) -> float:
        return cosine_lr(step // self.per_epoch, self.cfg.epochs, self.cfg.lr, self.cfg.min_lr)

    def _loader(self, start: int, stop: int) -> DataLoader:
        batches = [step_items(len(self.data), self.cfg.batch_size, self.cfg.seed, s) for s in range(start, stop)]
        return DataLoader(self.data, batch_sampler=batches, num_workers=self.cfg.num_workers,
                          pin_memory=self.ctx.device.type == "cuda")

    def update(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One optimiser step on one batch; returns its loss."""
        device = self.ctx.device
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        with torch.autocast(device.type, dtype=torch.float16, enabled=self.cfg.fp16):
            loss = self.loss_fn(self.model(images), labels)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss.item()

    def save(self) -> None:
        """resume.pt at the current step (never of non-finite trained tensors)."""
        if not all(torch.isfinite(p).all() for p in self.trainable):
            raise NonFinite(self.step, "a trained parameter")
        meta = {"adapter": None, "train_type": self.cfg.train_type, "vit": self.cfg.vit}
        save_resume(self.out, meta, {"step": self.step}, self.model, self.optimizer, self.scaler,
                    [rng_state(self.ctx.device)], self.run)
        self.saved = self.step
        log.info("saved resume.pt in %s at step %d", self.out, self.step)

    def fit(self) -> bool:
        """Train to the last step (True) or to ``--stop_at_step`` (False)."""
        cfg = self.cfg
        stop = min(self.max_steps, cfg.stop_at_step or self.max_steps)
        self.model.train()
        for images, labels in self._loader(self.step, stop) if self.step < stop else ():
            lr = self.lr_at(self.step)
            loss = self.update(images, labels)
            if not math.isfinite(loss):
                raise NonFinite(self.step)
            append_row(self.out / LOG_FILE, {"step": self.step, "epoch": (self.step - 1) // self.per_epoch + 1,
                                             "lr": lr, "loss": loss})
            if self.step % self.per_epoch == 0:
                log.info("| epoch %3d / %d | step %5d | lr %.3g | loss %.4f", self.step // self.per_epoch,
                         cfg.epochs, self.step, lr, loss)
            if self.step % self.per_epoch == 0 or self.step == stop:
                self.save()
        if self.step < self.max_steps:
            log.info("stopped at step %d (--stop_at_step); continue with --resume %s", self.step, self.out)
            return False
        return True


@torch.no_grad()
def accuracy(model: nn.Module, samples: list[Sample], cfg: ViTConfig, device: torch.device) -> float:
    """Top-1 accuracy on ``samples`` (evaluation transform, fp16 autocast with ``--fp16``)."""
    model.eval()
    data = Images(samples, EvalTransform(input_size(cfg.vit)))
    loader = DataLoader(data, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers)
    correct = 0
    for images, labels in loader:
        with torch.autocast(device.type, dtype=torch.float16, enabled=cfg.fp16):
            logits = model(images.to(device))
        correct += (logits.argmax(dim=1).cpu() == labels).sum().item()
    return correct / len(samples)


def save_trained(model: nn.Module, path: Path, header: dict) -> None:
    """The trained tensors as one safetensors file; ``header`` goes into its metadata as JSON."""
    payload = save_safetensors(trained_state(model), metadata={"nola_vit": json.dumps(header, sort_keys=True)})
    with atomic_open(path, "wb") as handle:
        handle.write(payload)


def run_record(cfg: ViTConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_RUN_KEYS}


def check_resume(state: dict, run: dict, where: str) -> None:
    """The resumed run must repeat the interrupted one's settings (one line naming the first that differs)."""
    for key, value in run.items():
        if state["run"].get(key) != value:
            fail(f"--resume {where}: --{key} was {state['run'].get(key)!r} in the interrupted run, now {value!r}: "
                 f"resume with the same flags")


def train_vit(launch: LaunchConfig, cfg: ViTConfig) -> None:
    """Check the inputs, then train and evaluate as ``cfg`` says (``--resume``: continue a run)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        fail("vit_ft.py runs as one process (the official code uses one GPU per run): drop the launcher")
    if cfg.fp16 and launch.device == "cpu":
        fail("--fp16 needs CUDA (the official AMP): drop --fp16 on --device cpu")
    resume = load_resume(cfg.resume) if cfg.resume else None
    if cfg.outdir is None:
        if cfg.resume is None:
            fail("--outdir is required (the folder the run writes)")
        cfg = dataclasses.replace(cfg, outdir=str(resume_path(cfg.resume).parent))
    check_writable(cfg.outdir, "--outdir", folder=True)
    run = run_record(cfg)
    if resume is not None:
        check_resume(resume, run, cfg.resume)
    train_set = scan(Path(cfg.train_data_path) / "train", "--train_data_path")
    val_set = scan(Path(cfg.val_path) / "val", "--val_data_path")
    if val_set.classes != train_set.classes:
        fail(f"--val_data_path: the class folders of {Path(cfg.val_path) / 'val'} differ from those of "
             f"{Path(cfg.train_data_path) / 'train'}; both splits need the same classes")
    if cfg.kshot > 0:
        train_set = kshot(train_set, cfg.kshot, cfg.kshot_seed, "--kshot")
    check_images(train_set)
    check_images(val_set)
    size = input_size(cfg.vit)
    augment = official_augmentation(size) if cfg.augment == "official" else EvalTransform(size)
    ctx = init_distributed(dataclasses.replace(launch, random_seed=cfg.seed))
    if cfg.fp16 and ctx.device.type != "cuda":
        fail("--fp16 needs CUDA (the official AMP): drop --fp16 or run on a GPU")
    with guarded_run(ctx, cfg.outdir, launch.dist_timeout) as state:
        model, weights = build(cfg, len(train_set.classes))
        model.to(ctx.device)
        trainer = state.trainer = ViTTrainer(cfg, ctx, model, train_set, augment, run, resume)
        out = trainer.out
        resumed = resume_path(cfg.resume).parent if cfg.resume else None
        state.lock = claim(out, OUTPUTS, resumed=resumed, overwrite=cfg.overwrite, flag="--outdir")
        start_log(out / LOG_FILE, None if resume is None else trainer.step)
        if resume is not None:
            log.info("resuming %s at step %d", cfg.resume, trainer.step)
        trained = count_trainable(model) - head_count(model)
        log.info("%s (%s), %s: %s trained parameters without the head, %s in the head; %d classes, %d training "
                 "images (%d steps per epoch), %d validation images", cfg.vit, weights, cfg.train_type,
                 f"{trained:,}", f"{head_count(model):,}", len(train_set.classes), len(train_set.samples),
                 trainer.per_epoch, len(val_set.samples))
        if not trainer.fit():
            return
        acc = accuracy(model, val_set.samples, cfg, ctx.device)
        header = {"vit": cfg.vit, "weights": weights, "train_type": cfg.train_type, "classes": train_set.classes,
                  "run": run}
        save_trained(model, out / TRAINED_FILE, header)
        result = {"accuracy": acc, "val_images": len(val_set.samples), "train_images": len(train_set.samples),
                  "trained_without_head": trained, "head": head_count(model), "weights": weights, "run": run}
        with atomic_open(out / RESULT_FILE) as handle:
            handle.write(json.dumps(result, indent=1) + "\n")
        log.info("validation accuracy %.4f (%d images); %s in %s", acc, len(val_set.samples), TRAINED_FILE, out)
