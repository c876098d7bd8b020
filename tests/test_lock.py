"""The versions behind the numbers: requirement.txt installs requirements.lock, an exact pin of every
package, and the environment running the tests is that set (a drifted package fails here, by name)."""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"requirements.lock: {line!r} is not an exact pin (name==version)"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_requirement_txt_installs_the_lock_and_the_package():
    lines = [line.strip() for line in (REPO / "requirement.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines == ["-r requirements.lock", "-e ."]


def test_the_lock_covers_what_nola_and_the_tests_need_and_no_cuda_build():
    pins = lock()
    project = (REPO / "pyproject.toml").read_text()
    declared = re.search(r"^dependencies = \[(.*)\]$", project, re.M)[1]
    needed = {canonicalize_name(Requirement(name.strip(' "')).name) for name in declared.split(",")}
    needed |= {"nltk", "pycocoevalcap", "matplotlib", "pytest", "peft", "accelerate", "gguf"}
    assert needed <= set(pins), sorted(needed - set(pins))
    assert not [name for name in pins if name.startswith(("nvidia-", "cuda-")) or name in ("torchvision", "timm")]


def test_the_installed_packages_are_the_locked_versions():
    """Local version labels aside (torch 2.13.0+cpu is the pinned 2.13.0)."""
    drifted = []
    for name, want in lock().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            drifted.append(f"{name}: not installed (locked {want})")
            continue
        if Version(have).public != Version(want).public:
            drifted.append(f"{name}: {have} installed, {want} locked")
    assert not drifted, "the environment differs from requirements.lock: " + "; ".join(drifted)
