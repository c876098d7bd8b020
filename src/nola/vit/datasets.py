"""The k-shot data sets of the ViT rows in the ImageFolder layout ``data/vit/<name>/{train,val}/<class>/``.

Archives are fetched by :mod:`nola.train.download` (from ``NOLA_DATA_MIRROR`` when set, never the network
then) and checked against the MD5 sums torchvision pins for them (CIFAR; the Caltech-101 tarball;
CUB-200-2011 as Caltech's data repository publishes it), then converted into ``<name>.part/`` and
renamed, so an interrupted conversion never leaves a half-filled folder under the final name.

- CIFAR-10 / CIFAR-100 (torchvision's ``cifar-*-python.tar.gz``): the train batches -> ``train/``, the
  test batch -> ``val/``; image ``i`` of a split is ``<class>/<i:05d>.png``, so sorted names keep the
  archive's order. Classes: ``label_names`` / ``fine_label_names``.
- CUB-200-2011: ``train_test_split.txt`` decides; the JPEG files are copied unchanged.
- Caltech-101 (torchvision's 101 categories, ``BACKGROUND_Google`` left out): there is no official
  split, so per class (sorted names) the first 30 of ``randperm`` with seed 0 go to ``train/`` and the
  rest to ``val/``.

    python -m nola.vit.datasets [cifar10 cifar100 cub200 caltech101] [--root DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from nola.train.download import FetchError, fetch, load_sources, mirror_root
from nola.errors import fail, run_cli
from nola.fileio import check_writable
from nola.log import get_logger

_log = get_logger("vit.datasets")
# MD5 of each archive as torchvision pins them (CIFAR10/CIFAR100.tgz_md5, Caltech101's 101_ObjectCategories.tar.gz)
# and as public CUB-200-2011 loaders pin it; all four checked against public copies of that code (2026-12-06).
MD5 = {"cifar10": "c58f30108f718f92721af3b95e74349a", "cifar100": "eb9058c3a382ffc7106e4002c42a8d85",
       "cub200": "97eceeb196236b17998738112f37df78", "caltech101": "b224c7392d521a49829488ab0f1120d9"}
CALTECH_TRAIN = 30


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _unpickle(data: bytes) -> dict:
    return pickle.loads(data, encoding="latin1")  # the archive's MD5 was checked before


def convert_cifar(archive: Path, out: Path, fine: bool) -> None:
    """CIFAR-10 (``fine=False``) or CIFAR-100 python archive -> ``out/{train,val}/<class>/<i>.png``."""
    with tarfile.open(archive) as tar:
        files = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

        def read(name: str) -> dict:
            if name not in files:
                raise FetchError(f"{archive}: no {name} inside: not the CIFAR python archive")
            return _unpickle(tar.extractfile(files[name]).read())

        meta = read("meta" if fine else "batches.meta")
        classes = meta["fine_label_names" if fine else "label_names"]
        key = "fine_labels" if fine else "labels"
        splits = {"train": ["train"] if fine else [f"data_batch_{i}" for i in range(1, 6)],
                  "val": ["test"] if fine else ["test_batch"]}
        for split, names in splits.items():
            index = 0
            for name in names:
                batch = read(name)
                pixels = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                for image, label in zip(pixels, batch[key]):
                    folder = out / split / classes[label]
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image).save(folder / f"{index:05d}.png")
                    index += 1


def convert_cub(archive: Path, out: Path) -> None:
    """CUB_200_2011.tgz -> ``out/{train,val}/<class>/<file>.jpg`` by ``train_test_split.txt``."""
    with tarfile.open(archive) as tar:
        members = {m.name.split("CUB_200_2011/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
        if "images.txt" not in members or "train_test_split.txt" not in members:
            raise FetchError(f"{archive}: no images.txt / train_test_split.txt inside: not CUB-200-2011")
        paths = dict(line.split() for line in tar.extractfile(members["images.txt"]).read().decode().splitlines()
                     if line.strip())
        is_train = dict(line.split() for line in tar.extractfile(members["train_test_split.txt"]).read().decode()
                        .splitlines() if line.strip())
        for image_id, rel in paths.items():
            target = out / ("train" if is_train[image_id] == "1" else "val") / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(members[f"images/{rel}"]) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def convert_caltech(archive: Path, out: Path) -> None:
    """101_ObjectCategories.tar.gz -> ``out/{train,val}/<class>/<file>.jpg`` (30 per class for training)."""
    import torch

    with tarfile.open(archive) as tar:
        by_class: dict[str, list[tarfile.TarInfo]] = {}
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 3 and parts[0] == "101_ObjectCategories" \
                    and parts[1] != "BACKGROUND_Google" and parts[2].lower().endswith(".jpg"):
                by_class.setdefault(parts[1], []).append(member)
        if not by_class:
            raise FetchError(f"{archive}: no 101_ObjectCategories/<class>/*.jpg inside: not Caltech-101")
        for name, members in sorted(by_class.items()):
            members.sort(key=lambda m: m.name)
            order = torch.randperm(len(members), generator=torch.Generator().manual_seed(0)).tolist()
            for rank, position in enumerate(order):
                member = members[position]
                target = out / ("train" if rank < CALTECH_TRAIN else "val") / name / Path(member.name).name
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)


CONVERTERS = {"cifar10": lambda a, o: convert_cifar(a, o, fine=False),
              "cifar100": lambda a, o: convert_cifar(a, o, fine=True),
              "cub200": convert_cub, "caltech101": convert_caltech}


def prepare(name: str, root: Path, mirror: Path | None) -> Path:
    """``root/data/vit/<name>`` ready (kept when already there); returns it."""
    out = root / "data" / "vit" / name
    if (out / "train").is_dir() and (out / "val").is_dir():
        _log.info("%s: present at %s", name, out)
        return out
    source = load_sources()["vit"][name]
    archive = fetch(source, root, mirror)
    digest = md5_file(archive)
    if digest != MD5[name]:
        archive.unlink()
        raise FetchError(f"{name}: {archive} has MD5 {digest}, not the pinned {MD5[name]}; it was deleted, fetch again")
    part = out.with_name(out.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    try:
        CONVERTERS[name](archive, part)
    except (tarfile.TarError, OSError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        shutil.rmtree(part, ignore_errors=True)
        raise FetchError(f"{name}: converting {archive} failed ({type(exc).__name__}: {exc})") from None
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    os.replace(part, out)
    _log.info("%s: ImageFolder layout at %s", name, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nola.vit.datasets", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"{', '.join(CONVERTERS)} (default: all)")
    parser.add_argument("--root", default=".", help="project root; the data goes to ROOT/data/vit/<name>")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in CONVERTERS]
    if unknown:
        fail(f"unknown data set {', '.join(unknown)}; choose from {', '.join(CONVERTERS)}")
    check_writable(args.root, "--root", folder=True)
    mirror = mirror_root()
    failed = []
    for name in args.names or list(CONVERTERS):
        try:
            prepare(name, Path(args.root), mirror)
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed.append(name)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
