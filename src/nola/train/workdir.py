"""A run's output folder: one run at a time, no silent reuse, no stale temp files, a log that survives.

:func:`claim` takes an exclusive ``flock`` on ``<folder>/.lock`` for the whole run (the kernel drops
it when the process ends, however it ends; the file names the holder), refuses a fresh start into a
folder that holds an earlier run's outputs (files, or folders such as an adapter's ``model.<step>/``)
unless ``--overwrite`` clears them, and removes the hidden temp files and folders that
:func:`nola.fileio.atomic_open` and :func:`nola.train.cache.building` leave when a process is killed mid-write.
``log.jsonl`` rows are appended by :func:`append_row` (a failed append is cut back off) and
trimmed on resume by :func:`trim_log` (a torn last row, left by a crash mid-append, is dropped).
"""
from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

from nola.errors import fail
from nola.fileio import atomic_open
from nola.log import get_logger

log = get_logger(__name__)
LOCK_FILE = ".lock"
# atomic_open's mkstemp and building's mkdtemp: prefix=".NAME.", suffix=".tmp"
_TEMP = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")


class WorkDirLock:
    """The held lock of one folder; :meth:`release` (or the process's end) frees it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1


def claim(folder: str | os.PathLike, outputs: tuple[str, ...], *, resumed: str | os.PathLike | None,
          overwrite: bool, flag: str) -> WorkDirLock:
    """Lock ``folder`` (created if missing) for this run and tidy it.

    ``outputs``: glob patterns of the files a run writes there. ``resumed``: the folder of the run
    that ``--resume`` continues, if any. A run that does not continue the one in ``folder`` is fresh:
    earlier outputs there are an error, or deleted with ``overwrite``.
    """
    path = Path(folder)
    fresh = resumed is None or Path(resumed).resolve() != path.resolve()
    if overwrite and not fresh:
        fail(f"--overwrite would delete the run that --resume {resumed} continues: drop --overwrite")
    holder = _holder(path / LOCK_FILE)
    if holder is not None:
        fail(f"{flag} {path} is in use by another run ({holder}); wait for it to end or choose another {flag}")
    if fresh and not overwrite:
        _refuse_earlier(path, outputs, flag)  # before anything is written
    lock = _acquire(path, flag)
    try:
        _remove_stale_temps(path, outputs)
        if fresh and overwrite:
            for name in _earlier(path, outputs):
                _remove(path / name)
                log.info("--overwrite: removed %s", path / name)
        elif fresh:
            _refuse_earlier(path, outputs, flag)  # written by a run that ended while this one started
    except BaseException:
        lock.release()
        raise
    return lock


def _earlier(path: Path, outputs: tuple[str, ...]) -> list[str]:
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir()
                  if (p.is_file() or p.is_dir()) and _is_output(p.name, outputs))


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def _is_output(name: str, outputs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in outputs)


def _refuse_earlier(path: Path, outputs: tuple[str, ...], flag: str) -> None:
    earlier = _earlier(path, outputs)
    if earlier:
        shown = ", ".join(earlier[:4]) + (f" and {len(earlier) - 4} more" if len(earlier) > 4 else "")
        fail(f"{flag} {path} holds an earlier run ({shown}): continue it with --resume {path}, or start "
             f"again with --overwrite (deletes those files), or choose another {flag}")


def _holder(lock_path: Path) -> str | None:
    """Who holds ``lock_path`` (the text it records), or None when nobody does."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:
        return None  # unreadable: _acquire reports it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(os.pread(fd, 4096, 0))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _describe(raw: bytes) -> str:
    try:
        who = json.loads(raw)
        return f"pid {who['pid']} on {who['host']}, started {who['started']}"
    except (ValueError, KeyError, TypeError):
        return "holder not recorded"


def _acquire(path: Path, flag: str) -> WorkDirLock:
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        fail(f"{flag} {path}: cannot write there ({exc.strerror}); choose a writable folder")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe(os.pread(fd, 4096, 0))
        os.close(fd)
        fail(f"{flag} {path} is in use by another run ({holder}); wait for it to end or choose another {flag}")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
    return WorkDirLock(fd)


def _remove_stale_temps(path: Path, outputs: tuple[str, ...]) -> None:
    """Temp files and folders of outputs (``.model.4.pt.k2j_x9.tmp``, ``.model.4.k2j_x9.tmp/``): a writer
    killed mid-write left them; the lock says no writer of this folder is alive."""
    for entry in path.glob(".*.tmp"):
        match = _TEMP.match(entry.name)
        if match and _is_output(match["name"], outputs) and (entry.is_file() or entry.is_dir()):
            _remove(entry)
            log.info("removed %s, left by an interrupted write", entry)


def append_row(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON row to ``path``; if the write fails (a full disk) cut the partial row off again."""
    path = Path(path)
    size = path.stat().st_size if path.exists() else 0
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
    except OSError:
        with contextlib.suppress(OSError):
            os.truncate(path, size)
        raise


def start_log(path: str | os.PathLike, resumed_step: int | None) -> None:
    """An empty ``log.jsonl`` for a fresh run; for a resumed one the log trimmed to ``resumed_step``."""
    if resumed_step is None:
        with atomic_open(path):
            pass
    else:
        trim_log(path, resumed_step)


def trim_log(path: str | os.PathLike, step: int) -> None:
    """Drop ``log.jsonl`` rows after ``step`` (written after the last checkpoint, before the stop),
    and a torn last row (a crash mid-append) with a warning; a bad row before the last is an error."""
    path = Path(path)
    if not path.is_file():
        return
    lines = [(n, line) for n, line in enumerate(path.read_bytes().split(b"\n"), 1) if line.strip()]
    kept = []
    for i, (number, line) in enumerate(lines):
        row = _row(line)
        if row is None and i == len(lines) - 1:
            log.warning("%s:%d: dropped a torn last row (a crash or full disk during the append)", path, number)
        elif row is None:
            fail(f"{path}:{number}: not a JSON row of a training log; remove that line (or the file) and resume "
                 f"again")
        elif row.get("step", 0) <= step:
            kept.append(line.decode("utf-8") + "\n")
    with atomic_open(path) as handle:
        handle.write("".join(kept))


def _row(line: bytes) -> dict | None:
    try:
        row = json.loads(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step", 0), int) else None

