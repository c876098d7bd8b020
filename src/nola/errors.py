"""User-facing errors: one line, exit status 2, no traceback."""
from __future__ import annotations

import sys
from typing import Callable, NoReturn


class UsageError(Exception):
    """Bad input from the user: a flag, a file or its contents. The message names the fix."""


def fail(message: str) -> NoReturn:
    """Raise a :class:`UsageError` with ``message``."""
    raise UsageError(message)


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's ``main``; turn a :class:`UsageError` into ``error: ...`` and exit code 2. A
    process that joined a process group ends here through :func:`nola.distributed.leave`."""
    try:
        main()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _leave_group(2)
        sys.exit(2)
    except SystemExit as exc:
        _leave_group(exc.code if isinstance(exc.code, int) else int(exc.code is not None))
        raise
    _leave_group(0)


def _leave_group(status: int) -> None:
    distributed = sys.modules.get("nola.distributed")  # imported only by scripts that can join a group
    if distributed is not None:
        distributed.leave(status)
