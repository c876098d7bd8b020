"""The one logging helper every module and script goes through."""
from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s | %(message)s"
_configured = False


def get_logger(name: str = "nola") -> logging.Logger:
    """Return a logger under the ``nola`` hierarchy, configuring stderr output once."""
    global _configured
    if not _configured:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        root = logging.getLogger("nola")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
        _configured = True
    if name != "nola" and not name.startswith("nola."):
        name = "nola." + name
    return logging.getLogger(name)


def set_rank(rank: int) -> None:
    """Silence INFO messages on every process but rank 0 of a distributed job."""
    logging.getLogger("nola").setLevel(logging.INFO if rank == 0 else logging.WARNING)
