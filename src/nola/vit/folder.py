"""ImageFolder layouts (``<root>/<class>/<image>``) read as torchvision's ``ImageFolder`` reads them,
and the k-shot choice of UCDvision/NOLA ``vit/dataloader.py``.

Classes are the sub-folders of the root in sorted order (label = position); each class's images
are the files under its folder (sub-folders walked, links followed) with an image extension, in
sorted order. The k-shot rule draws per class, in label order, ``randperm(n)`` from a generator
seeded with ``kshot_seed`` and keeps the first k: the official code seeds the global generator
before each class, a fresh generator of the same seed gives the same permutation without touching
the global one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image

from nola.errors import fail

# torchvision.datasets.folder.IMG_EXTENSIONS, compared in lower case as torchvision does.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class Sample(NamedTuple):
    path: str
    label: int


class ImageSet(NamedTuple):
    """One split: its class names (label order) and its (path, label) samples."""

    classes: list[str]
    samples: list[Sample]


def scan(root: str | os.PathLike, flag: str) -> ImageSet:
    """The classes and samples of ``root``; one-line errors for a missing or empty folder or class."""
    root = Path(root)
    if not root.is_dir():
        fail(f"{flag}: {root} is not a folder; it must hold one sub-folder of images per class "
             f"(scripts/vit/download_data.sh writes that layout)")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        fail(f"{flag}: {root} holds no class folders; expected {root}/<class>/<image>")
    samples = []
    for label, name in enumerate(classes):
        found = [os.path.join(top, f) for top, _, files in sorted(os.walk(root / name, followlinks=True))
                 for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS)]
        if not found:
            fail(f"{flag}: class folder {root / name} holds no image ({', '.join(IMG_EXTENSIONS)}); "
                 f"add images or remove the folder")
        samples += [Sample(path, label) for path in found]
    return ImageSet(classes, samples)


def kshot(images: ImageSet, k: int, seed: int, flag: str) -> ImageSet:
    """The official k-shot subset: per class (label order) the first ``k`` of ``randperm(n)`` drawn
    with seed ``seed``, in that drawn order. A class with fewer than ``k`` images is an error (the
    official code would silently train on fewer)."""
    by_class: dict[int, list[str]] = {label: [] for label in range(len(images.classes))}
    for path, label in images.samples:
        by_class[label].append(path)
    chosen = []
    for label, paths in by_class.items():
        if len(paths) < k:
            fail(f"{flag}: class {images.classes[label]!r} has {len(paths)} images, fewer than --kshot {k}; "
                 f"lower --kshot or add images")
        order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed))[:k]
        chosen += [Sample(paths[i], label) for i in order.tolist()]
    return ImageSet(images.classes, chosen)


def load_rgb(path: str) -> Image.Image:
    """The decoded image in RGB (torchvision's ``pil_loader``); a file PIL cannot decode is one error line."""
    try:
        with open(path, "rb") as handle:
            image = Image.open(handle)
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = (str(exc).strip().splitlines() or [""])[0][:120]
        fail(f"{path}: not a readable image ({type(exc).__name__}: {reason}); replace or remove the file")


def check_images(images: ImageSet) -> None:
    """Decode every image once before any training, so a damaged file stops the run at the start."""
    for path, _ in images.samples:
        load_rgb(path)
