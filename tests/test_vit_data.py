"""scripts/vit/download_data.sh (nola.vit.datasets) on tiny archives the tests make in each data
set's published layout: the ImageFolder result, the pinned-checksum refusal, the offline error line."""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nola.vit import datasets
from nola.vit.folder import scan

REPO = Path(__file__).resolve().parents[1]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _jpeg(colour: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (6, 5), (colour, 0, 0)).save(out, format="JPEG")
    return out.getvalue()


def fake_cifar100(path: Path) -> dict:
    rng = np.random.default_rng(0)
    split = {"train": (rng.integers(0, 256, (5, 3072), dtype=np.uint8), [1, 0, 1, 1, 0]),
             "test": (rng.integers(0, 256, (2, 3072), dtype=np.uint8), [0, 1])}
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "cifar-100-python/meta", pickle.dumps({"fine_label_names": ["apple", "bee"]}))
        for name, (data, labels) in split.items():
            _add(tar, f"cifar-100-python/{name}", pickle.dumps({"data": data, "fine_labels": labels}))
    return split


def test_cifar100_layout_and_pixels(tmp_path):
    split = fake_cifar100(tmp_path / "c.tar.gz")
    datasets.convert_cifar(tmp_path / "c.tar.gz", tmp_path / "out", fine=True)
    train = scan(tmp_path / "out" / "train", "train")
    assert train.classes == ["apple", "bee"]
    assert [(Path(p).name, label) for p, label in train.samples] == [
        ("00001.png", 0), ("00004.png", 0), ("00000.png", 1), ("00002.png", 1), ("00003.png", 1)]
    data, _ = split["train"]
    # row i: 1024 red, 1024 green, 1024 blue values, each 32 x 32 row-major
    pixels = np.array(Image.open(tmp_path / "out/train/bee/00003.png"))
    np.testing.assert_array_equal(pixels, data[3].reshape(3, 32, 32).transpose(1, 2, 0))
    assert sorted(p.name for p in (tmp_path / "out/val").rglob("*.png")) == ["00000.png", "00001.png"]


def test_cub_split_file_decides(tmp_path):
    with tarfile.open(tmp_path / "cub.tgz", "w:gz") as tar:
        _add(tar, "CUB_200_2011/images.txt",
             b"1 001.Albatross/a_1.jpg\n2 001.Albatross/a_2.jpg\n3 002.Auklet/b_1.jpg\n")
        _add(tar, "CUB_200_2011/train_test_split.txt", b"1 1\n2 0\n3 1\n")
        for i, name in enumerate(("001.Albatross/a_1.jpg", "001.Albatross/a_2.jpg", "002.Auklet/b_1.jpg")):
            _add(tar, f"CUB_200_2011/images/{name}", _jpeg(40 * i))
    datasets.convert_cub(tmp_path / "cub.tgz", tmp_path / "out")
    got = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.jpg"))
    assert got == ["train/001.Albatross/a_1.jpg", "train/002.Auklet/b_1.jpg", "val/001.Albatross/a_2.jpg"]
    assert (tmp_path / "out/val/001.Albatross/a_2.jpg").read_bytes() == _jpeg(40)


def test_caltech_thirty_per_class_for_training(tmp_path):
    with tarfile.open(tmp_path / "ct.tar.gz", "w:gz") as tar:
        for name in [f"image_{i:04d}.jpg" for i in range(1, 34)]:
            _add(tar, f"101_ObjectCategories/ant/{name}", _jpeg(1))
        _add(tar, "101_ObjectCategories/BACKGROUND_Google/image_0001.jpg", _jpeg(2))
    datasets.convert_caltech(tmp_path / "ct.tar.gz", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] != [] and not list((tmp_path / "out").rglob("BACKGROUND*"))
    names = [f"image_{i:04d}.jpg" for i in range(1, 34)]
    order = torch.randperm(33, generator=torch.Generator().manual_seed(0)).tolist()
    assert sorted(p.name for p in (tmp_path / "out/train/ant").iterdir()) == sorted(names[i] for i in order[:30])
    assert sorted(p.name for p in (tmp_path / "out/val/ant").iterdir()) == sorted(names[i] for i in order[30:])


def test_prepare_from_the_mirror(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    archive = mirror / "data/vit/archives/cifar-100-python.tar.gz"
    archive.parent.mkdir(parents=True)
    fake_cifar100(archive)
    monkeypatch.setitem(datasets.MD5, "cifar100", datasets.md5_file(archive))  # the tiny archive's own sum
    out = datasets.prepare("cifar100", tmp_path / "root", mirror)
    assert out == tmp_path / "root/data/vit/cifar100" and len(scan(out / "val", "val").samples) == 2
    assert not (out.parent / "cifar100.part").exists()


def _download(root: Path, mirror: Path, *names: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts/vit/download_data.sh"), "--root", str(root), *names],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NOLA_DATA_MIRROR": str(mirror), "PYTHON": sys.executable})


def test_wrong_checksum_and_offline_are_one_line(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "data/vit/archives").mkdir(parents=True)
    fake_cifar100(mirror / "data/vit/archives/cifar-100-python.tar.gz")
    proc = _download(tmp_path / "root", mirror, "cifar100", "cub200")
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "Traceback" not in proc.stderr
    assert "cifar100" in errors[0] and "not the pinned eb9058c3a382ffc7106e4002c42a8d85" in errors[0]
    assert "cub200" in errors[1] and "not in the mirror" in errors[1]
    assert not (tmp_path / "root/data/vit/cifar100").exists() and not list((tmp_path / "root").rglob("*.tar.gz"))
    unknown = _download(tmp_path / "root", mirror, "imagenet")
    assert unknown.returncode == 2 and unknown.stderr.count("error:") == 1 and "imagenet" in unknown.stderr
