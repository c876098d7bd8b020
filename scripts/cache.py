"""Built-once artefacts kept under ``$NOLA_CACHE`` (default ``~/.cache/nola``), keyed by recipe.

An entry's folder is ``<name>-<key>``, where the key is a hash of everything that decides its
contents (settings, input file hashes, code hashes). A changed recipe gets a new key, so a stale
entry is never reused; an entry appears only complete (built in a temp folder, then renamed).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

from nola.cache import building, cache_root

RECIPE_FILE = "recipe.json"


def recipe_key(recipe: dict) -> str:
    """16 hex digits of the SHA-256 of the recipe's canonical JSON."""
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def files_digest(paths: list[Path]) -> str:
    """One SHA-256 over the names and bytes of ``paths`` (in the order given)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cached(name: str, recipe: dict, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """The folder of entry ``name`` for ``recipe``, and whether it was built now.

    ``build(folder)`` fills an empty temp folder; on success the folder gets ``recipe.json`` and
    is renamed into place. A failed build leaves nothing behind."""
    root = cache_root()
    final = root / f"{name}-{recipe_key(recipe)}"
    if (final / RECIPE_FILE).is_file():
        return final, False
    shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover
    with building(final) as tmp:
        build(tmp)
        (tmp / RECIPE_FILE).write_text(json.dumps(recipe, indent=1, sort_keys=True) + "\n")
    return final, True
