"""Images to tensors as UCDvision/NOLA ``vit/dataloader.py`` does.

Evaluation (and training with ``--augment none``): resize the shorter side to 8/7 of the input
size (256 for 224), centre crop, scale to [0, 1], ImageNet normalisation. It is written here on
PIL and torch with torchvision's rules for PIL images (the same ``Image.resize`` call and output
size, the same crop offsets ``int(round((h - crop) / 2))``), because torchvision cannot be imported
everywhere this repository is tested. Training with ``--augment official``: the official
augmentation, built from torchvision's transforms (imported only then).

Every training image draws its augmentation from a generator seeded by (run seed, epoch, position
in the epoch) — torch's and Python's, restored afterwards — so the numbers do not depend on the
number of data-loading processes, and a resumed run sees the images an uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import random
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageFilter

from nola.errors import fail

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Transform = Callable[[Image.Image], torch.Tensor]


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """torchvision ``Resize(size)`` on a PIL image: shorter side ``size``, longer side
    ``int(size * long / short)``, bilinear; unchanged when the shorter side is already ``size``."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if short == size:
        return image
    new_long = int(size * long / short)
    new = (size, new_long) if width <= height else (new_long, size)
    return image.resize(new, Image.BILINEAR)


def centre_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision ``CenterCrop(size)`` on an image at least ``size`` on both sides."""
    width, height = image.size
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_normalised_tensor(image: Image.Image) -> torch.Tensor:
    """``ToTensor`` then ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``: a (3, H, W) float32 tensor."""
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return pixels.sub(mean).div(std)


class EvalTransform:
    """Resize the shorter side to ``size * 8 // 7`` (256 for 224), centre crop ``size``, normalise.
    (A class, not a closure, so that data-loading processes started by spawn can receive it.)"""

    def __init__(self, size: int) -> None:
        self.size, self.resize = size, size * 8 // 7

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_normalised_tensor(centre_crop(resize_shorter(image, self.resize), self.size))


class GaussianBlur:
    """SimCLR's blur as the official code has it: PIL Gaussian blur, radius uniform in ``sigma``
    (drawn from Python's ``random``)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def official_augmentation(size: int) -> Transform:
    """RandomResizedCrop(size, scale 0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale
    p 0.2, Gaussian blur p 0.5, horizontal flip, then ``to_normalised_tensor`` (torchvision's)."""
    try:
        from torchvision import transforms as T
    except (ImportError, OSError) as exc:
        fail(f"--augment official needs torchvision ({type(exc).__name__}); install it with "
             f"`pip install -r requirements-vit.txt`, or train with --augment none (resize + centre crop)")
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([GaussianBlur((0.1, 2.0))], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the image at ``position`` of ``epoch``'s order (63 bits)."""
    return ((seed * 1_000_003 + epoch) * 1_000_033 + position) % (1 << 63)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator and Python's ``random`` for the block; put both back after it."""
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)
