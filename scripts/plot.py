"""Loss curves of a training run from its ``log.jsonl`` (rows written by :mod:`nola.gpt2.train` for gpt2_ft.py, or by
:mod:`nola.causal.llama_train` for llama_ft.py, whose update rows carry no ``split`` and the update's ``loss``)."""
from __future__ import annotations

import json
from pathlib import Path

from nola.errors import fail
from nola.fileio import atomic_open

LOG_FILE = "log.jsonl"


def read_curves(work_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{"train": [(step, avg_loss)], "valid": [(step, loss)]} from ``work_dir/log.jsonl``."""
    path = Path(work_dir) / LOG_FILE
    if not path.is_file():
        fail(f"{path} not found: give the --work_dir of a gpt2_ft.py run or the --output_dir of a llama_ft.py run")
    curves: dict[str, list[tuple[int, float]]] = {"train": [], "valid": []}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            split = row.get("split", "train")
            value = row["avg_loss"] if split == "train" and "avg_loss" in row else row["loss"]
            curves[split].append((int(row["step"]), float(value)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            fail(f"{path}:{lineno}: not a row written by gpt2_ft.py or llama_ft.py")
    if not curves["train"] and not curves["valid"]:
        fail(f"{path} has no loss rows yet: train past the first --log_interval or --eval_interval")
    return curves


def plot_curves(curves: dict[str, list[tuple[int, float]]], out: str | Path, title: str) -> Path:
    """Write a PNG of the train (average over each log interval) and validation losses against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    labels = {"train": "train (as logged)", "valid": "validation"}
    for split, points in curves.items():
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3, label=labels[split])
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    with atomic_open(out, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return out
