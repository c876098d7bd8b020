"""The README and the pages under docs/ say what the code does: the adapter-size table of
docs/checkpoints.md is benchmarks/adapter_size.py's output for GPT-2 Medium, the examples the README
shows are the ones the docs pages explain, every link between the pages lands, and scripts/test.sh's
flags select the tests the README says they do."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from nola.gpt2.sizes import paper_sizes

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "ARCHITECTURE.md"]
REAL_TABLE = "## Latest measured table: NOLA vs LoRA and PEFT methods on SmolLM2-135M (E2E)"
SIZES = (REPO / "docs" / "checkpoints.md", "## Adapter file size, gpt2.md, q and v")


def after(path: Path, heading: str) -> str:
    """The text of ``path`` after the line ``heading``."""
    text = "\n" + path.read_text(encoding="utf-8")
    assert f"\n{heading}\n" in text, f"{path.name} has no {heading!r}"
    return text.split(f"\n{heading}\n", 1)[1]


def table_after(path: Path, heading: str) -> list[list[str]]:
    """The body cells of the Markdown table that follows ``heading`` in ``path``."""
    rows = []
    for line in after(path, heading).lstrip("\n").splitlines():
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[2:]  # header and rule


def first_block(path: Path, heading: str, lang: str) -> str:
    """The first fenced ``lang`` block after ``heading`` in ``path``."""
    rest = after(path, heading)
    assert f"```{lang}\n" in rest, f"{path.name}: no {lang} block after {heading!r}"
    return rest.split(f"```{lang}\n", 1)[1].split("\n```", 1)[0]


def test_adapter_sizes_are_the_computed_ones():
    computed = paper_sizes("gpt2.md")
    rows = table_after(*SIZES)
    lora4 = next(size for name, _, size in computed if name == "LoRA r=4 fp32")
    assert [r[0] for r in rows] == [name for name, _, _ in computed]
    for (name, params, size), (_, r_params, r_bytes, r_kb, r_ratio) in zip(computed, rows):
        assert int(r_params.replace(",", "")) == params, name
        assert int(r_bytes.replace(",", "")) == size, name
        assert float(r_kb.replace(",", "")) == pytest.approx(size / 1024, abs=0.5 if size >= 1024000 else 5e-4), name
        assert float(r_ratio) == pytest.approx(size / lora4, abs=5e-4), name


def test_quotes_of_the_sizes_match_the_table():
    sizes = {name: size for name, _, size in paper_sizes("gpt2.md")}
    quotes = [q for page in PAGES for q in re.findall(r"\(([\d,]+) vs ([\d,]+) bytes\)", page.read_text(encoding="utf-8"))]
    assert quotes, "no page quotes the adapter sizes any more"
    for quoted in quotes:
        assert [int(q.replace(",", "")) for q in quoted] == [sizes["NOLA r=8 k=l=375 3-bit"], sizes["LoRA r=4 fp32"]]


@pytest.mark.parametrize("readme_heading, page, page_heading, lang", [
    ("## NOLA on any model", "any_model.md", "## The PEFT way", "python"),
    ("## One paper command: NOLA on GPT-2 Medium, E2E", "gpt2.md", "# The paper's commands (GPT-2 on E2E, WebNLG, DART)",
     "bash"),
])
def test_the_readme_shows_the_examples_its_docs_pages_explain(readme_heading, page, page_heading, lang):
    shown = first_block(REPO / "README.md", readme_heading, lang)
    assert shown == first_block(REPO / "docs" / page, page_heading, lang)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        fenced ^= line.startswith("```")
        if not fenced and re.match(r"#+ ", line):
            found.add(slug(line.lstrip("#")))
    return found


def test_every_link_between_the_pages_lands():
    checked = 0
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            landing = (page.parent / file).resolve() if file else page
            assert landing.exists(), f"{page.name}: {target} names no file"
            assert landing.is_relative_to(REPO), f"{page.name}: {target} points outside the repository"
            if anchor:
                assert anchor in anchors(landing), f"{page.name}: {target} names no heading of {landing.name}"
            checked += 1
    assert checked >= 20


def test_the_readme_is_a_front_door():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "## Code map" not in text
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in text, f"README.md does not link docs/{page.name}"


def collected(*flags: str) -> set[str]:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "test.sh"), *flags, "--collect-only", "-q"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line for line in proc.stdout.splitlines() if "::" in line}


def test_test_sh_slow_runs_everything_and_slow_only_the_slow_ones():
    fast, everything, slow = collected(), collected("--slow"), collected("--slow-only")
    assert slow and fast and everything == fast | slow and not fast & slow
    assert "tests/test_paper_scripts.py::test_row_end_to_end_on_cpu" in slow


def test_the_real_weights_table_is_real_table_s_output():
    """The README's real-weights table is results/real_e2e.md's (what scripts/real_table.sh wrote and
    printed), line for line: every row of that run, none edited."""
    section = after(REPO / "README.md", REAL_TABLE).split("\n## ", 1)[0]
    results = (REPO / "results" / "real_e2e.md").read_text(encoding="utf-8")

    def table_lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("|")]

    assert table_lines(section) == table_lines(results)
    assert len(table_lines(results)) == 2 + 10  # header, rule, nine adapted rows and the unadapted model


def test_the_mini_reproduction_table_is_mini_report_s_output():
    """docs/mini_reproduction.md's table is results/mini_e2e.md's (what scripts/mini_report.py wrote
    and printed), line for line."""
    def table_lines(path: Path) -> list[str]:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("|")]

    assert table_lines(REPO / "docs" / "mini_reproduction.md") == table_lines(REPO / "results" / "mini_e2e.md")
    assert len(table_lines(REPO / "results" / "mini_e2e.md")) == 2 + 5  # header, rule, the base and four adapted runs
