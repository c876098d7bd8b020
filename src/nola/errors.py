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
    """Run a script's ``main``; turn a :class:`UsageError` into ``error: ...`` and exit code 2."""
    try:
        main()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
