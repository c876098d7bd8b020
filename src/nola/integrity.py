"""Checkpoint files read safely: one loader for every format, content checksums, schema checks.

Every checkpoint the library reads (base GPT-2 files, adapter files, ``resume.pt``, the tensors of
an adapter folder) goes through :func:`read_file`, so a truncated, empty or foreign file is one
``error:`` line naming it, whatever library raised underneath. Files nola writes are *sealed*:
:func:`seal` adds ``content_sha256``, the SHA-256 of a canonical encoding of everything else in
the file, so the digest does not depend on the container (torch's legacy or zip format, pickle
protocol, safetensors header layout). The encoding walks the object depth first:

- a dict: ``d`` and its size, then key, value for each key in sorted order (by type name, repr);
- a list or tuple (the same thing after a round trip): ``l``, its length, then the items;
- a tensor: ``T``, its dtype and shape, then its raw bytes in row-major order (on CPU);
- a str / int / float / bool / None / bytes: a tag and its text (``repr`` for floats: exact).

Every field is length-prefixed (8 bytes little-endian), so no two objects share an encoding. It
covers the metadata too (seeds, adapter settings): a flipped byte there changes predictions as
surely as one in the coefficients. Files written before sealing load with a note instead.
"""
from __future__ import annotations

import hashlib
import os
import struct
import warnings
from pathlib import Path
from typing import Mapping

import torch

from nola.errors import fail
from nola.log import get_logger

CONTENT_KEY = "content_sha256"

log = get_logger(__name__)


def _field(digest, tag: bytes, data: bytes | memoryview = b"") -> None:
    digest.update(tag)
    digest.update(struct.pack("<Q", len(data) if isinstance(data, bytes) else data.nbytes))
    digest.update(data)


def _feed(digest, value: object) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        _field(digest, b"T", f"{flat.dtype}{tuple(value.shape)}".encode())
        _field(digest, b"", memoryview(flat.view(torch.uint8).numpy()))
    elif isinstance(value, Mapping):
        _field(digest, b"d", str(len(value)).encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        _field(digest, b"l", str(len(value)).encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, str):
        _field(digest, b"s", value.encode())
    elif isinstance(value, bool):
        _field(digest, b"?", b"1" if value else b"0")
    elif isinstance(value, int):
        _field(digest, b"i", str(value).encode())
    elif isinstance(value, float):
        _field(digest, b"f", repr(value).encode())
    elif value is None:
        _field(digest, b"n")
    elif isinstance(value, bytes):
        _field(digest, b"b", value)
    elif isinstance(value, (torch.dtype, torch.device)):
        _field(digest, b"o", str(value).encode())
    else:
        raise TypeError(f"cannot checksum a {type(value).__name__}")


def content_digest(obj: object) -> str:
    """Hex SHA-256 of the canonical encoding of ``obj`` (see the module docstring)."""
    digest = hashlib.sha256()
    _feed(digest, obj)
    return digest.hexdigest()


def seal(obj: dict) -> dict:
    """``obj`` plus its ``content_sha256``, ready to be written."""
    return {**obj, CONTENT_KEY: content_digest(obj)}


def check_digest(content: object, recorded: object, source: str | os.PathLike, fix: str) -> None:
    """Compare ``content``'s digest with the ``recorded`` one: a mismatch is an error saying the
    file is damaged; no record (a file written before checksums) is a note."""
    if recorded is None:
        log.info("note: %s was written before nola recorded content checksums: loading it unchecked",
                 source)
        return
    try:
        same = isinstance(recorded, str) and content_digest(content) == recorded
    except TypeError:
        same = False
    if not same:
        fail(f"{source} is damaged: its content does not match the SHA-256 recorded when it was written "
             f"(a changed byte, a bad copy or disk); {fix}")


def check_sealed(obj: dict, source: str | os.PathLike, fix: str) -> None:
    """:func:`check_digest` for a dict written through :func:`seal`."""
    check_digest({k: v for k, v in obj.items() if k != CONTENT_KEY}, obj.get(CONTENT_KEY), source, fix)


def read_file(path: str | os.PathLike, fix: str, missing: str | None = None) -> dict:
    """A ``.safetensors`` or ``torch.save`` file as a dict on CPU (``weights_only``: no code runs).

    Not there, a directory, empty, truncated, corrupt, not a dict: one error naming ``path``, with
    ``missing`` (what to do when it is not there) or ``fix``."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        fail(f"checkpoint {path} {what}: {missing or fix}")
    if path.stat().st_size == 0:
        fail(f"checkpoint {path} is empty (0 bytes): {fix}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            with warnings.catch_warnings():  # a corrupt header also draws torch's "unknown pickle protocol" warning
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except PermissionError:
        fail(f"checkpoint {path} is not readable (permission denied): fix its permissions")
    except Exception as exc:  # noqa: BLE001 - any failure to parse is the file's: torch, pickle, zip, safetensors
        fail(f"checkpoint {path} is unreadable or truncated ({type(exc).__name__}): {fix}")
    if not isinstance(obj, dict):
        fail(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of tensors: {fix}")
    return obj


def check_schema(obj: Mapping, schema: Mapping[str, type | tuple[type, ...]], source: str | os.PathLike,
                 fix: str) -> None:
    """Every key of ``schema`` must be in ``obj`` with a value of its type(s): else one error."""
    missing = [key for key in schema if key not in obj]
    if missing:
        fail(f"{source} lacks {', '.join(map(repr, missing))}: not a complete file of this kind; {fix}")
    for key, kind in schema.items():
        if not isinstance(obj[key], kind):
            fail(f"{source}: {key!r} holds a {type(obj[key]).__name__}, expected {_names(kind)}; {fix}")


def check_tensors(tensors: Mapping, source: str | os.PathLike, key: str, fix: str) -> None:
    """``tensors`` must map names to tensors."""
    bad = [name for name, value in tensors.items() if not (isinstance(name, str) and isinstance(value, torch.Tensor))]
    if bad:
        fail(f"{source}: {key!r} holds non-tensor entries ({', '.join(map(repr, bad[:3]))}); {fix}")


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
