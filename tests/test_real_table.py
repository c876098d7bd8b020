"""scripts/real_table.sh: the real-weights table driver. Missing PEFT or model stop it with one `error:`
line before any work; ``--quick`` on a tiny random LLaMA (slow) trains, sweeps, decodes and scores every
row through the real CLIs and writes the table whose numbers match the runs' own files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nola.causal import d2t
from nola.train.formats import read_e2e, write_formatted
from scripts.real_table import QUICK, markdown
from scripts.tiny_llama import save_tiny_llama, words_of

REPO = Path(__file__).resolve().parents[1]


def table(*args: str, env: dict | None = None, python_prefix: str = "") -> subprocess.CompletedProcess:
    code = f"{python_prefix}import runpy, sys; sys.argv = ['real_table.py', *{list(args)!r}]; " \
           "runpy.run_module('scripts.real_table', run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("prefix,model,message", [
    ("", "/nonexistent/smollm2", "no model there; fetch it with `bash download_pretrained_checkpoints.sh smollm2-135m-instruct`"),
    ("import sys; sys.modules['peft'] = None; ", None, "HF PEFT is not installed: pip install -r requirements.lock"),
], ids=["no-model", "no-peft"])
def test_a_missing_prerequisite_stops_with_one_error_line(tmp_path, prefix, model, message):
    out = tmp_path / "out"
    args = ["--out", str(out), "--results", str(tmp_path / "results")] + (["--model", model] if model else [])
    done = table(*args, python_prefix=prefix)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
    assert not out.exists() and not (tmp_path / "results").exists()


@pytest.mark.slow
def test_quick_mode_runs_every_row_through_the_clis_and_tabulates_their_files(tmp_path, mirror):
    out = tmp_path / "out"
    e2e = out / "data" / "e2e"
    e2e.mkdir(parents=True)
    valid, test = read_e2e(mirror / "data/e2e/valid.txt")[:40], read_e2e(mirror / "data/e2e/test.txt")[:20]
    write_formatted(valid, e2e / "valid_formatted.jsonl")
    write_formatted(test, e2e / "test_formatted.jsonl")
    texts = [d2t.prompt_text(r["context"]) + d2t.target_text(r["completion"]) for r in valid + test]
    model = save_tiny_llama(tmp_path / "model", words_of(texts), initializer_range=0.2)
    done = table("--quick", "--out", str(out), "--model", str(model))
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "real_e2e.json").read_text())
    assert record["complete"] and list(record["rows"]) == [*QUICK.rows, "unadapted"]
    for name in QUICK.rows:
        row = record["rows"][name]
        swept = record["sweep"][name]
        assert row["lr"] == float(min(swept, key=swept.get)) and len(swept) == 2
        folder = out / "runs" / name / f"lr{row['lr']:g}"
        log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        assert row["valid_loss"] == [r["loss"] for r in log if r.get("split") == "valid"][-1]
        assert row["adapter_bytes"] == sum(f.stat().st_size for f in folder.glob("adapter_*"))
        scores = json.loads((out / "decode" / name / "scores.json").read_text())["scores"]
        assert row["scores"] == scores and row["contexts"] == QUICK.test_contexts
    assert record["rows"]["unadapted"]["contexts"] == QUICK.unadapted_contexts
    text = (out / "real_e2e.md").read_text()
    assert text == markdown(record) and text.count("\n| ") == len(record["rows"]) + 1
    assert (out / "real_e2e.png").stat().st_size > 1000
