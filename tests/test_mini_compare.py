"""scripts/mini_compare.py: a finished mini run's adapters and log rows against the same runs trained
again; equal -> checkpoint.txt points at the new adapters, anything different -> exit 1, nothing changed."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEGACY = Path(__file__).parent / "fixtures" / "legacy_gpt2"
RUNS = ("lora_r4", "lora_r1", "nola", "qnola3")
ROWS = [{"step": 5, "split": "train", "loss": 3.25, "ms_per_batch": 10.0}, {"step": 5, "split": "valid", "loss": 3.5}]


def make(root: Path, fixture: str, rows: list[dict], ms: float) -> Path:
    for name in RUNS:
        run = root / name
        run.mkdir(parents=True)
        shutil.copy(LEGACY / f"{fixture}.5.pt", run / "model.5.pt")
        (run / "log.jsonl").write_text("".join(json.dumps({**r, **({"ms_per_batch": ms} if "ms_per_batch" in r else {})})
                                               + "\n" for r in rows))
        (run / "checkpoint.txt").write_text(f"{run / 'model.5.pt'}\n")
    return root


def compare(old: Path, new: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/mini_compare.py", "--old", str(old), "--new", str(new)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_equal_runs_move_checkpoint_txt_to_the_new_adapters(tmp_path):
    old, new = make(tmp_path / "old", "nola", ROWS, 10.0), make(tmp_path / "new", "nola", ROWS, 99.0)  # timing differs
    proc = compare(old, new)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("log rows equal True (2 rows); adapter tensors equal True") == 4
    assert all((old / n / "checkpoint.txt").read_text().strip() == str((new / n / "model.5.pt").resolve()) for n in RUNS)


def test_another_adapter_or_row_is_exit_1_and_changes_nothing(tmp_path):
    old = make(tmp_path / "old", "nola", ROWS, 10.0)
    for new, expected in ((make(tmp_path / "other_tensors", "qnola", ROWS, 10.0), "adapter tensors equal False"),
                          (make(tmp_path / "other_row", "nola", [ROWS[0], {**ROWS[1], "loss": 3.5000001}], 10.0),
                           "log rows equal False")):
        proc = compare(old, new)
        assert proc.returncode == 1 and expected in proc.stdout
        assert all((old / n / "checkpoint.txt").read_text().strip() == str(old / n / "model.5.pt") for n in RUNS)
