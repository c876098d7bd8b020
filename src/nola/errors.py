"""The one error type of the library, and how the command lines report it (one line, exit status 2)."""
from __future__ import annotations

import sys
from typing import Callable, NoReturn


class NOLAError(ValueError):
    """Bad input to nola: a flag, a file or its contents, a model or a call. The message names the fix.

    The library raises only this type for what a user can fix (``nola.inject`` on an unknown target,
    a wrong base for an adapter folder, merging into a 4-bit weight, ...); the CLIs turn it into one
    ``error:`` line. A ``ValueError``, so code that caught the library's former ``ValueError`` still does."""


UsageError = NOLAError  # the name the command-line modules use


def fail(message: str) -> NoReturn:
    """Raise a :class:`NOLAError` with ``message``."""
    raise NOLAError(message)


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's ``main``; turn a :class:`NOLAError` into ``error: ...`` and exit code 2. A
    process that joined a process group ends here through :func:`nola.train.distributed.leave`."""
    try:
        main()
    except NOLAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _leave_group(2)
        sys.exit(2)
    except SystemExit as exc:
        _leave_group(exc.code if isinstance(exc.code, int) else int(exc.code is not None))
        raise
    _leave_group(0)


def _leave_group(status: int) -> None:
    distributed = sys.modules.get("nola.train.distributed")  # imported only by scripts that can join a group
    if distributed is not None:
        distributed.leave(status)
