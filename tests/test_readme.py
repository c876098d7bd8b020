"""The README says what the code does: its adapter-size table is benchmarks/adapter_size.py's
output for GPT-2 Medium, and scripts/test.sh's flags select the tests the README says they do."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from nola.sizes import paper_sizes

REPO = Path(__file__).resolve().parents[1]
TITLE = "### Adapter file size, gpt2.md, q and v"


def readme_table(title: str) -> list[list[str]]:
    """The cells of the Markdown table that follows ``title`` in README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert title in text, f"README.md has no {title!r}"
    rows = []
    for line in text.split(title, 1)[1].lstrip("\n").splitlines():
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[2:]  # header and rule


def test_readme_adapter_sizes_are_the_computed_ones():
    computed = paper_sizes("gpt2.md")
    rows = readme_table(TITLE)
    lora4 = next(size for name, _, size in computed if name == "LoRA r=4 fp32")
    assert [r[0] for r in rows] == [name for name, _, _ in computed]
    for (name, params, size), (_, r_params, r_bytes, r_kb, r_ratio) in zip(computed, rows):
        assert int(r_params.replace(",", "")) == params, name
        assert int(r_bytes.replace(",", "")) == size, name
        assert float(r_kb.replace(",", "")) == pytest.approx(size / 1024, abs=0.5 if size >= 1024000 else 5e-4), name
        assert float(r_ratio) == pytest.approx(size / lora4, abs=5e-4), name


def test_readme_quotes_of_the_sizes_match_the_table():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    sizes = {name: size for name, _, size in paper_sizes("gpt2.md")}
    for quoted in re.findall(r"\(([\d,]+) vs ([\d,]+) bytes\)", text):
        assert [int(q.replace(",", "")) for q in quoted] == [sizes["NOLA r=8 k=l=375 3-bit"], sizes["LoRA r=4 fp32"]]


def collected(*flags: str) -> set[str]:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "test.sh"), *flags, "--collect-only", "-q"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line for line in proc.stdout.splitlines() if "::" in line}


def test_test_sh_slow_runs_everything_and_slow_only_the_slow_ones():
    fast, everything, slow = collected(), collected("--slow"), collected("--slow-only")
    assert slow and fast and everything == fast | slow and not fast & slow
    assert "tests/test_paper_scripts.py::test_row_end_to_end_on_cpu" in slow
