"""Reading scorer inputs: strict UTF-8, and one-line errors that name the file and the fix."""
from __future__ import annotations

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
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        fail(f"{what} {path} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}): "
             f"re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8")


def file_lines(text: str) -> list[str]:
    """Lines split on ``\\n`` only; a final newline does not start an extra (empty) line."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines
