"""``src/vit_ft.py``'s k-shot fine-tuning (UCDvision/NOLA vit/train_timm.py's recipe), a task
(:class:`ViTTask`) of the one loop (:class:`nola.train.trainer.Trainer`).

Adam without weight decay over the trained tensors, the learning rate of
``CosineAnnealingLR(T_max=epochs, eta_min=min_lr)`` stepped per epoch, cross-entropy with label
smoothing, fp16 autocast with loss scaling (``--fp16``), batches of ``--batch_size`` with the
last incomplete one of each epoch dropped, evaluation on the whole ``val/`` folder after the last
epoch (no validation during training). One process; a step is one batch and one update. Step ``s``
is batch ``s % per_epoch`` of epoch ``s // per_epoch``, whose order is a permutation seeded by
(``--seed``, epoch), and every image's augmentation is seeded by its place (:mod:`nola.vit.transforms`),
so the data position is a function of the step and ``--resume`` is exact.

Outputs in ``--outdir``: ``trained.safetensors`` (the trained tensors: α/β or LoRA's A/B, and the
head; the whole model with ``full``) and ``result.json`` at the end, ``resume.pt`` at every epoch's
end (and at ``--stop_at_step``), ``log.jsonl`` (one row per step).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nola.adapters import count_trainable
from nola.config import LaunchConfig, ViTConfig
from nola.errors import fail
from nola.fileio import atomic_open, check_writable
from nola.log import get_logger
from nola.train.distributed import DistContext, init_distributed
from nola.train.faults import guarded_run
from nola.train.resume import RESUME_FILE, load_resume
from nola.train.trainer import LOG_FILE, Cadence, Step, Trainer, check_run, output_folder
from nola.vit.folder import ImageSet, Sample, check_images, kshot, load_rgb, scan
from nola.vit.model import build, head_count, input_size, trained_state
from nola.vit.transforms import EvalTransform, Transform, official_augmentation, sample_seed, seeded

log = get_logger(__name__)
RESULT_FILE, TRAINED_FILE = "result.json", "trained.safetensors"
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


class ViTTask:
    """What :class:`nola.train.trainer.Trainer` needs of a ``vit_ft.py`` run: a step is one batch and one
    update; the loss is the batch's mean cross-entropy (the official recipe), so its count is 1."""

    steps_per_update, clip = 1, 0.0

    def __init__(self, cfg: ViTConfig, ctx: DistContext, model: nn.Module, train_set: ImageSet, augment: Transform,
                 run: dict) -> None:
        self.cfg, self.ctx, self.model, self.net, self.run = cfg, ctx, model, model, run
        self.work_dir = Path(cfg.outdir)
        self.per_epoch = len(train_set.samples) // cfg.batch_size
        if self.per_epoch == 0:
            fail(f"--batch_size {cfg.batch_size}: the {len(train_set.samples)} training images fill no batch; "
                 f"lower --batch_size or raise --kshot")
        self.max_step = cfg.epochs * self.per_epoch
        self.optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
        self.amp_dtype, self.scale_loss = (torch.float16 if cfg.fp16 else None), cfg.fp16
        self.cadence = Cadence(log_every=1, save_every=self.per_epoch, stop_at=cfg.stop_at_step)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.data = Images(train_set.samples, augment, cfg.seed)

    def steps(self, step: int) -> Iterator[Step]:
        stop = min(self.max_step, self.cfg.stop_at_step or self.max_step)
        batches = [step_items(len(self.data), self.cfg.batch_size, self.cfg.seed, s) for s in range(step, stop)]
        loader = DataLoader(self.data, batch_sampler=batches, num_workers=self.cfg.num_workers,
                            pin_memory=self.ctx.device.type == "cuda")
        for images, labels in loader:
            yield Step([{"images": images, "labels": labels}], 1.0)

    def loss_sum(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_fn(net(batch["images"]), batch["labels"])

    def denominator(self, count: torch.Tensor) -> torch.Tensor:
        return count

    def lr_at(self, step: int) -> float:
        return cosine_lr(step // self.per_epoch, self.cfg.epochs, self.cfg.lr, self.cfg.min_lr)

    def train_row(self, step: int, lr: float, loss: float, avg: float, ms: float) -> dict:
        if step % self.per_epoch == 0:
            log.info("| epoch %3d / %d | step %5d | lr %.3g | loss %.4f", step // self.per_epoch, self.cfg.epochs,
                     step, lr, loss)
        return {"step": step, "epoch": (step - 1) // self.per_epoch + 1, "lr": lr, "loss": loss}

    def save(self, step: int, new: bool) -> dict:
        log.info("saving resume.pt in %s at step %d", self.work_dir, step)
        return {"adapter": None, "train_type": self.cfg.train_type, "vit": self.cfg.vit}

    def position(self) -> dict:
        return {}  # the step is the data position (step_items)

    def restore(self, state: dict) -> None:
        pass


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


def train_vit(launch: LaunchConfig, cfg: ViTConfig) -> None:
    """Check the inputs, then train and evaluate as ``cfg`` says (``--resume``: continue a run)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        fail("vit_ft.py runs as one process (the official code uses one GPU per run): drop the launcher")
    if cfg.fp16 and launch.device == "cpu":
        fail("--fp16 needs CUDA (the official AMP): drop --fp16 on --device cpu")
    resume = load_resume(cfg.resume) if cfg.resume else None
    cfg = dataclasses.replace(cfg, outdir=output_folder(cfg.outdir, cfg.resume, "--outdir", "the folder the run writes"))
    check_writable(cfg.outdir, "--outdir", folder=True)
    run = run_record(cfg)
    if resume is not None:
        check_run(resume, run, cfg.resume)
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
        task = ViTTask(cfg, ctx, model, train_set, augment, run)
        trainer = Trainer(task, ctx, resume)
        trainer.open(state, flag="--outdir", outputs=OUTPUTS, resume=cfg.resume, overwrite=cfg.overwrite)
        out = task.work_dir
        trained = count_trainable(model) - head_count(model)
        log.info("%s (%s), %s: %s trained parameters without the head, %s in the head; %d classes, %d training "
                 "images (%d steps per epoch), %d validation images", cfg.vit, weights, cfg.train_type,
                 f"{trained:,}", f"{head_count(model):,}", len(train_set.classes), len(train_set.samples),
                 task.per_epoch, len(val_set.samples))
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
