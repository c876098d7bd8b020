"""Atomic writes leave either the old file or the complete new one, never a partial file."""
from __future__ import annotations

import hashlib

import pytest

from nola.fileio import atomic_open, sha256_file


def test_atomic_open_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_open(target) as handle:
        handle.write("new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_current_umask()


def _current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_sha256_file_matches_hashlib(tmp_path):
    blob = bytes(range(256)) * 5000
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)
    assert sha256_file(path, chunk=4096) == hashlib.sha256(blob).hexdigest()
