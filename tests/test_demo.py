"""scripts/demo.sh: a missing GPT-2 file stops it at once; the whole demo (slow) shows NOLA beating
the unadapted base with the cached base of scripts/pretrain.py."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpt2_without_weights_is_one_error_line_and_exit_2(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), "--gpt2", "sm", "--checkpoints",
                           str(tmp_path / "none"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: {tmp_path / 'none' / 'gpt2-pytorch_model.bin'} not found: run "
                           "`bash download_pretrained_checkpoints.sh gpt2` first (or pass --checkpoints DIR)\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_demo_adapts_the_cached_base_and_beats_it(tmp_path, mirror):
    proc = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    scores = {m: (float(b), float(n)) for m, b, n in re.findall(r"^  (BLEU|NIST|METEOR|ROUGE_L|CIDEr) +([\d.]+) +([\d.]+)$",
                                                                 proc.stdout, re.M)}
    assert len(scores) == 5
    assert all(nola > base for base, nola in scores.values()), scores
    assert len(re.findall(r"^  NOLA: +\w", proc.stdout, re.M)) == 3
