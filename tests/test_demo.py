"""scripts/demo.sh: bad input stops it at once; the whole demo (slow) adapts SmolLM2-135M-Instruct with NOLA,
beats the unadapted model on every E2E metric of the same MRs and names the MR's restaurant in >= 95% of
its outputs."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_out_that_is_a_file_is_one_error_line_and_exit_2(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("x")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), "--out", str(taken)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: --out {taken} is a file, not a folder: pass a folder (it is created if missing)\n"
    assert taken.read_text() == "x" and sorted(tmp_path.iterdir()) == [taken]


@pytest.mark.slow
def test_demo_adapts_smollm2_and_beats_the_unadapted_model(tmp_path, mirror):
    proc = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    scores = {m: (float(b), float(n)) for m, b, n in re.findall(r"^  (BLEU|NIST|METEOR|ROUGE_L|CIDEr) +([\d.]+) +([\d.]+)$",
                                                                 proc.stdout, re.M)}
    assert len(scores) == 5
    assert all(nola > base for base, nola in scores.values()), scores
    named, total = map(int, re.search(r"^outputs naming the MR's restaurant: NOLA (\d+)/(\d+)$", proc.stdout, re.M).groups())
    assert named >= 0.95 * total, proc.stdout
    assert len(re.findall(r"^  NOLA: +\w", proc.stdout, re.M)) == 3
