"""How a training run stops on a fault: one ``error:`` line, a non-zero status, nothing damaged.

Faults are not bad input (status 2, :mod:`nola.errors`): a full disk, processes that lost each
other (``--dist_timeout``), a non-finite loss end a run with status 1 and a line that says where
the last complete checkpoint is; SIGTERM (what schedulers and the launcher send) takes Ctrl-C's
path (status 143 instead of 130).
"""
from __future__ import annotations

import contextlib
import errno
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NoReturn

import torch.distributed as dist

from nola.train.distributed import DistContext, cleanup
from nola.fileio import NO_SPACE
from nola.log import get_logger

log = get_logger(__name__)
FAULT_STATUS = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be."""


class NonFinite(Exception):
    """The training loss (or the trained parameters) stopped being finite at ``step``."""

    def __init__(self, step: int, what: str = "the training loss") -> None:
        super().__init__(f"{what} is not finite at step {step}")
        self.step, self.what = step, what


def sigterm_as_interrupt() -> Callable[[], None]:
    """From now on SIGTERM raises :class:`Terminated` in the main thread; returns the function that
    puts the previous handler back (a no-op off the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame) -> NoReturn:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def stop_on_interrupt(exc: KeyboardInterrupt, *, rank: int, world_size: int, step: int | None,
                      folder: str) -> NoReturn:
    """Ctrl-C or SIGTERM: the resume hint (naming the rank under several processes), status 130 / 143."""
    where = f"rank {rank}: " if world_size > 1 else ""
    at = f" at step {step}" if step is not None else ""
    log.warning("%sinterrupted%s; continue from the last checkpoint with --resume %s", where, at, folder)
    raise SystemExit(128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)) from None


def no_space(exc: BaseException) -> OSError | None:
    """The out-of-space OSError behind ``exc`` (torch.save wraps it in a RuntimeError), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def lost_contact(exc: BaseException) -> bool:
    """A collective that timed out or found a peer gone (Gloo raises plain RuntimeErrors)."""
    return dist.is_initialized() and (isinstance(exc, dist.DistError) or
                                      (isinstance(exc, RuntimeError) and "gloo" in str(exc)))


def describe(exc: BaseException, *, step: int, saved: int | None, folder: str, timeout: int) -> str | None:
    """The one line for a fault, or None when ``exc`` is not one. ``saved``: the step of the last
    complete checkpoint (None: nothing saved yet)."""
    resume = (f"the last complete checkpoint is step {saved} in {folder}" if saved is not None
              else "no checkpoint was saved yet")
    again = f"--resume {folder}" if saved is not None else "start again with --overwrite"
    if isinstance(exc, NonFinite):
        return (f"{exc.what} is not finite (NaN or inf) at step {exc.step}; stopped without saving it: {resume} "
                f"(lower --lr or check the data, then {again})")
    full = no_space(exc)
    if full is not None:
        return (f"{folder}: no space left while writing at step {step} ({errno.errorcode[full.errno]}: "
                f"{full.strerror}); {resume}: free space, then {again}")
    if lost_contact(exc):
        rank = dist.get_rank()
        return (f"rank {rank}, step {step}: lost contact with the other processes (one stopped, hung or died; "
                f"--dist_timeout {timeout} s): {_first_line(exc)}; {resume}: {again}")
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def stop_on_fault(exc: BaseException, *, step: int, saved: int | None, folder: str, timeout: int,
                  is_main: bool) -> None:
    """End the process with the fault's one line (status 1) if ``exc`` is a fault; return otherwise.
    Every rank finds a non-finite loss alike, so only rank 0 prints that one."""
    message = describe(exc, step=step, saved=saved, folder=folder, timeout=timeout)
    if message is None:
        return
    if is_main or not isinstance(exc, NonFinite):
        print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(FAULT_STATUS) from None


@dataclass
class RunState:
    """What :func:`guarded_run` needs to know about a run once it exists: ``trainer`` (its ``step``
    and ``saved``, the step of the last complete checkpoint or None) and ``lock`` (the claimed
    folder's :class:`nola.train.workdir.WorkDirLock`)."""

    trainer: Any = None
    lock: Any = None


@contextlib.contextmanager
def guarded_run(ctx: DistContext, folder: str, timeout: int) -> Iterator[RunState]:
    """The body of a training run (``gpt2_ft.py``, ``llama_ft.py``, ``vit_ft.py``): SIGTERM raises as Ctrl-C does, an
    interrupt or a fault ends the process with its one line, and however the run ends the folder's
    lock is released and the process group closed. ``folder``: the run's folder as the user gave it."""
    state = RunState()
    restore_sigterm = sigterm_as_interrupt()
    try:
        yield state
    except KeyboardInterrupt as exc:
        step = None if state.trainer is None else state.trainer.step
        stop_on_interrupt(exc, rank=ctx.rank, world_size=ctx.world_size, step=step, folder=folder)
    except Exception as exc:
        trainer = state.trainer
        if trainer is not None:
            stop_on_fault(exc, step=trainer.step, saved=trainer.saved, folder=folder, timeout=timeout,
                          is_main=ctx.is_main)
        raise
    finally:
        restore_sigterm()
        if state.lock is not None:
            state.lock.release()
        cleanup()
