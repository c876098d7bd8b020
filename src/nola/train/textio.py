"""The one reader of text inputs: strict UTF-8, and one-line errors that name the file and the fix.

Every text file the project reads (raw data sets, formatted / encoded jsonl, sample files, scorer
references and outputs, model cards, vocabulary files) goes through :func:`read_text`, so a stray
non-UTF-8 byte is reported the same way everywhere: the file, the line and the byte offset.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

from nola.errors import fail


def read_text(path: str | os.PathLike, what: str) -> str:
    """Return the UTF-8 text of ``path``; ``what`` names the file in error messages."""
    path = Path(path)
    if not path.exists():
        fail(f"{what} {path} does not exist: check the path")
    if not path.is_file():
        fail(f"{what} {path} is not a regular file: pass a text file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        fail(f"{what} {path}: cannot read it ({exc.strerror}): check its permissions")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        fail(f"{what} {path} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}, byte offset "
             f"{exc.start}): re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8")


def text_lines(path: str | os.PathLike, what: str) -> list[str]:
    """The lines of ``path`` exactly as iterating ``open(path, encoding="utf-8")`` yields them
    (universal newlines, line ends kept), read through :func:`read_text`."""
    return list(io.StringIO(read_text(path, what), newline=None))


def read_json(path: str | os.PathLike, what: str) -> object:
    """The JSON value held by ``path`` (one-line error with the line of a syntax error)."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as exc:
        fail(f"{what} {path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})")


def file_lines(text: str) -> list[str]:
    """Lines split on ``\\n`` only; a final newline does not start an extra (empty) line."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines
