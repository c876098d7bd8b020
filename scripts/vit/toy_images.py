"""A small random image dataset in the ImageFolder layout, for the tests and CPU smoke runs of
``src/vit_ft.py``: ``<root>/train/<class>/*.png`` and ``<root>/val/<class>/*.png``, each class's
images noise with its own colour channel raised, so that a model can learn them.

    python -m scripts.vit.toy_images OUT [--classes 3] [--train 6] [--val 3]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def draw_split(root: str | Path, per_class: list[int], seed: int = 0, size: tuple[int, int] = (40, 36)) -> Path:
    """Write ``per_class[c]`` PNG images for class ``class<c>`` under ``root``; return ``root``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for label, count in enumerate(per_class):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pixels = rng.integers(0, 200, (size[0] + index % 5, size[1], 3), dtype=np.uint8)
            pixels[..., label % 3] = 255 - 40 * (label // 3)
            Image.fromarray(pixels).save(folder / f"img{index:03d}.png")
    return root


def draw_dataset(root: str | Path, classes: int = 3, train: int = 6, val: int = 3) -> Path:
    """A train/ and a val/ split of ``classes`` classes; return ``root``."""
    root = Path(root)
    draw_split(root / "train", [train] * classes, seed=0)
    draw_split(root / "val", [val] * classes, seed=1)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--train", type=int, default=6, help="training images per class")
    parser.add_argument("--val", type=int, default=3, help="validation images per class")
    args = parser.parse_args()
    print(draw_dataset(args.out, args.classes, args.train, args.val))


if __name__ == "__main__":
    main()
