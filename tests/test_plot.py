"""scripts/plot.py reads the loss rows of both training loops' log.jsonl: gpt2_ft.py's (split, avg_loss)
and llama_ft.py's (update rows without a split, validation rows with one)."""
from __future__ import annotations

import json

import pytest

from nola.errors import NOLAError
from scripts.plot import plot_curves, read_curves


def _log(folder, rows):
    folder.mkdir(exist_ok=True)
    (folder / "log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_gpt2_ft_and_llama_ft_rows_give_the_same_curves(tmp_path):
    gpt2 = _log(tmp_path / "gpt2", [{"split": "train", "step": 10, "avg_loss": 2.5, "lr": 0.1},
                                    {"split": "valid", "step": 10, "loss": 2.25}])
    llama = _log(tmp_path / "llama", [{"step": 10, "lr": 0.02, "loss": 2.5},
                                      {"step": 10, "split": "valid", "loss": 2.25, "tokens": 40}])
    want = {"train": [(10, 2.5)], "valid": [(10, 2.25)]}
    assert read_curves(gpt2) == want and read_curves(llama) == want
    png = plot_curves(read_curves(llama), tmp_path / "loss.png", "llama")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_foreign_row_is_one_error_naming_the_line(tmp_path):
    _log(tmp_path, [{"step": 10, "loss": 2.5}, {"step": 20}])
    with pytest.raises(NOLAError, match="log.jsonl:2: not a row written by gpt2_ft.py or llama_ft.py$"):
        read_curves(tmp_path)
