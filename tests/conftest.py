"""Shared test fixtures: paths to the repo and to the offline data mirror."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("NOLA_DATA_MIRROR", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not (MIRROR / "data").is_dir():
        pytest.fail(f"NOLA_DATA_MIRROR={MIRROR} has no data/: set it to the offline mirror (../shared here)")
    return MIRROR
