"""The cached demo base (scripts/pretrain.py over scripts/cache.py) and scripts/plot_log.py on the log its
gpt2_ft.py run wrote: reused while the recipe stays, rebuilt when any part of it changes."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.cache import cached, recipe_key
from nola.errors import UsageError
from scripts.plot import read_curves
from scripts.pretrain import BaseRecipe, pretrain_files, pretrained_base

REPO = Path(__file__).resolve().parents[1]
TINY = BaseRecipe(n_embd=16, n_layer=1, n_head=2, n_positions=64, steps=3, batch=2, seq_len=24, warmup=1,
                  held_out=2)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data_dir(e2e_data, tmp_path_factory) -> Path:
    """create_datasets.sh's layout with short WebNLG and E2E dev files (E2E lines stand in for WebNLG's:
    the recipe only hashes and trains on them)."""
    root = tmp_path_factory.mktemp("datasets")
    lines = (e2e_data / "valid.jsonl").read_text().splitlines(keepends=True)
    for split, part in (("webnlg_challenge_2017", lines[:8]), ("e2e", lines[8:16])):
        (root / "data" / split).mkdir(parents=True)
        (root / "data" / split / "valid.jsonl").write_text("".join(part))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NOLA_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def first(cache, data_dir, tmp_path_factory):
    return pretrained_base(data_dir, tmp_path_factory.mktemp("work"), TINY)


def test_the_base_is_built_once_then_reused(first, cache, data_dir, tmp_path):
    assert first.built_now and first.folder.parent == cache
    assert first.card.is_file() and first.checkpoint.is_file()
    recorded = json.loads((first.folder / "recipe.json").read_text())
    assert recorded["recipe"] == json.loads(json.dumps(dataclasses.asdict(TINY))) and first.folder.name == f"demo-base-{recipe_key(recorded)}"
    stamp = first.checkpoint.stat().st_mtime_ns
    again = pretrained_base(data_dir, tmp_path, TINY)
    assert not again.built_now and again.folder == first.folder
    assert again.checkpoint.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in cache.iterdir()) == [first.folder.name]  # no temp folders left


def test_a_changed_recipe_or_data_builds_a_new_base(first, cache, data_dir, tmp_path):
    longer = pretrained_base(data_dir, tmp_path / "a", dataclasses.replace(TINY, steps=4))
    assert longer.built_now and longer.folder != first.folder
    assert [r["step"] for r in map(json.loads, (longer.folder / "log.jsonl").read_text().splitlines())
            if r["split"] == "valid"] == [4]
    references = data_dir / "data" / "e2e" / "valid.jsonl"
    original = references.read_text()
    try:
        references.write_text(original + original.splitlines(keepends=True)[0])
        other_data = pretrained_base(data_dir, tmp_path / "b", TINY)
    finally:
        references.write_text(original)
    assert other_data.built_now and other_data.folder not in (first.folder, longer.folder)
    assert not pretrained_base(data_dir, tmp_path / "c", TINY).built_now


def test_the_references_are_trained_on_alone_after_the_eos_token(data_dir, tmp_path):
    train, valid = pretrain_files(data_dir, tmp_path, TINY)
    webnlg = (data_dir / "data" / "webnlg_challenge_2017" / "valid.jsonl").read_text().splitlines()
    e2e = [json.loads(line) for line in (data_dir / "data" / "e2e" / "valid.jsonl").read_text().splitlines()]
    plain = [json.dumps({"context": [50256], "completion": item["completion"]}) for item in e2e]
    assert train.read_text().splitlines() == webnlg[:-2] + plain[:-2]
    assert valid.read_text().splitlines() == webnlg[-2:] + plain[-2:]


def test_a_failed_build_leaves_nothing(cache):
    def broken(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"x")
        raise UsageError("stop")

    with pytest.raises(UsageError):
        cached("broken", {"a": 1}, broken)
    assert not any(p.name.startswith((".broken", "broken")) for p in cache.iterdir())


def test_plot_log_draws_the_run_of_the_base(first, tmp_path):
    work = tmp_path / "run"
    work.mkdir()
    (work / "log.jsonl").write_text((first.folder / "log.jsonl").read_text())
    curves = read_curves(work)
    assert [s for s, _ in curves["train"]] == [1, 2, 3] and [s for s, _ in curves["valid"]] == [3]
    assert all(0 < loss < 12 for _, loss in curves["train"] + curves["valid"])
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "plot_log.py"), str(work)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {work / 'loss.png'}"
    assert (work / "loss.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("content, message", [
    (None, "log.jsonl not found: give the --work_dir of a gpt2_ft.py run"),
    ("", "has no loss rows yet"),
    ('{"step": 1}\n', "log.jsonl:1: not a row written by gpt2_ft.py"),
])
def test_plot_log_bad_input_is_one_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / "log.jsonl").write_text(content)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "plot_log.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and message in proc.stderr
    assert not (tmp_path / "loss.png").exists()
