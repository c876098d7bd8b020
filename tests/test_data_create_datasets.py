"""`create_datasets.sh` end to end: from the offline mirror, and from raw files already in place."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from nola.gpt2.data import FTDataset, read_formatted

EXPECTED = {  # encoded file -> (examples, unique contexts)
    "data/e2e/valid.jsonl": (4672, 547),
    "data/e2e/test.jsonl": (4693, 630),
    "data/webnlg_challenge_2017/valid.jsonl": (2258, 870),
    "data/dart/valid.jsonl": (6980, 2721),
}
NOT_IN_MIRROR = ["e2e/train", "webnlg/train", "webnlg/test", "dart/train", "dart/test"]


def _run(repo, root, mirror):
    env = dict(os.environ, NOLA_DATA_MIRROR=str(mirror), PYTHON=sys.executable)
    return subprocess.run(["bash", str(repo / "create_datasets.sh"), str(root)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_builds_every_split_the_mirror_has(repo, mirror, tmp_path):
    proc = _run(repo, tmp_path, mirror)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    summary = proc.stdout.split("built 4 encoded splits under")[1].splitlines()[1:]
    for (name, (examples, unique)), line in zip(EXPECTED.items(), summary):
        assert line.startswith(f"  {name}: {examples} examples, {unique} unique contexts, ")
    assert summary[4] == "skipped (raw file neither present nor obtainable): " + " ".join(NOT_IN_MIRROR)
    warnings = [line for line in proc.stderr.splitlines() if "skipped" in line]
    assert len(warnings) == len(NOT_IN_MIRROR) and all(w.startswith("warning: ") for w in warnings)

    for name, (examples, unique) in EXPECTED.items():
        data = FTDataset(tmp_path / name, seq_len=512, eval_len=64)
        assert (len(data), data.num_unique_contexts) == (examples, unique)
        formatted = read_formatted(tmp_path / name.replace(".jsonl", "_formatted.jsonl"))
        assert len(formatted) == examples and len({r["context"] for r in formatted}) == unique
    webnlg = read_formatted(tmp_path / "data/webnlg_challenge_2017/valid_formatted.jsonl")
    assert all(r["cate"] is True for r in webnlg)
    assert (tmp_path / "vocab/encoder.json").is_file() and (tmp_path / "vocab/vocab.bpe").is_file()
    first = json.loads((tmp_path / "data/e2e/test.jsonl").read_text().split("\n", 1)[0])
    assert first["context"][-1] == 50256 and first["completion"][-1] == 50256


def test_raw_files_in_place_are_used_and_missing_ones_skipped(repo, mirror, tmp_path):
    empty_mirror = tmp_path / "mirror"
    shutil.copytree(mirror / "vocab", empty_mirror / "vocab")
    (empty_mirror / "data").mkdir()
    root = tmp_path / "root"
    (root / "data/e2e").mkdir(parents=True)
    head = (mirror / "data/e2e/valid.txt").read_text(encoding="utf-8").splitlines(keepends=True)[:25]
    (root / "data/e2e/valid.txt").write_text("".join(head), encoding="utf-8")
    proc = _run(repo, root, empty_mirror)
    assert proc.returncode == 0, proc.stderr
    assert "built 1 encoded splits" in proc.stdout
    assert "e2e/valid: " in proc.stderr and "differs from the pinned SHA-256" in proc.stderr
    unique = len({line.split("||")[0] for line in head})
    assert f"data/e2e/valid.jsonl: 25 examples, {unique} unique contexts" in proc.stdout
    assert len([line for line in proc.stderr.splitlines() if line.startswith("warning: ")]) == 8


def test_malformed_raw_file_stops_with_its_line(repo, mirror, tmp_path):
    (tmp_path / "data/e2e").mkdir(parents=True)
    (tmp_path / "data/e2e/train.txt").write_text("name : A||A .\nname : B B .\n")
    proc = _run(repo, tmp_path, mirror)
    assert proc.returncode == 2
    assert "error: data/e2e/train.txt:2: no '||'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data/e2e/train.jsonl").exists()
