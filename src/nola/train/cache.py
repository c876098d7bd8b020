"""The per-user cache (``$NOLA_CACHE``, default ``~/.cache/nola``) and folders that appear only complete.

Things built once and reused (the demo's base, the converted SmolLM2 folder, the wheel it comes
from) live under :func:`cache_root`. A folder is built in a temp folder beside its final name and
renamed at the end, so a failed or interrupted build never leaves anything under the final name.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from nola.fileio import umask


def cache_root() -> Path:
    """``$NOLA_CACHE``, else ``~/.cache/nola``."""
    return Path(os.environ.get("NOLA_CACHE") or Path.home() / ".cache" / "nola")


@contextlib.contextmanager
def building(final: str | os.PathLike) -> Iterator[Path]:
    """An empty temp folder beside ``final``, renamed to ``final`` when the block succeeds and removed
    whatever happens. When ``final`` appeared meanwhile (a concurrent build finished first), that one is
    kept and this one dropped: the caller removes a bad ``final`` before building a new one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700; the final folder gets a normal mode
    try:
        yield tmp
        if not final.exists():
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
