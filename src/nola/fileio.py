"""Atomic writes and file hashing: no half-written output, ever."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from nola.errors import fail

NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # a full disk; EFBIG: a file-size limit (RLIMIT_FSIZE)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: object, path: str | os.PathLike, compact: bool = False) -> int:
    """``torch.save`` through a temp file and rename; return the bytes written. ``compact`` uses torch's plain (non-zip) container, which saves the
    ~1 KB of zip records that would dominate a file of a few kilobytes; ``torch.load`` reads both."""
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, _WriteOnly(handle), _use_new_zipfile_serialization=not compact)
    return Path(path).stat().st_size


class _WriteOnly:
    """A file without ``fileno``: torch.save then writes through ``write``, so a full disk surfaces as
    the OSError (ENOSPC / EFBIG) that :mod:`nola.train.faults` recognises, not as torch's bare RuntimeError
    of a failed raw write. The bytes are the same."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.write, self.flush = handle.write, handle.flush


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_writable(path: str | os.PathLike, flag: str, folder: bool = False) -> None:
    """Fail now, before any work, unless ``path`` (a file, or with ``folder`` a folder) can be
    written: it must not be a folder (a file), and its nearest existing ancestor must be a folder
    in which a file can be created (missing folders below it are created when writing). The probe
    file is removed at once, so nothing is left behind."""
    target = Path(path)
    if folder and target.exists() and not target.is_dir():
        fail(f"{flag} {path} is a file, not a folder: pass a folder (it is created if missing)")
    if not folder and target.is_dir():
        fail(f"{flag} {path} is a folder: pass a file name (e.g. {target / 'out'})")
    probe = target if folder else target.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        fail(f"{flag} {path}: {probe} is a file, so no folder can be made under it; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".nola-write-check.", dir=probe)
    except OSError as exc:
        fail(f"{flag} {path}: cannot write in {probe} ({exc.strerror}); choose a writable location")
    os.close(fd)
    os.unlink(tmp)
