"""Collect the runs of scripts/mini_reproduction.sh into results/mini_e2e.{md,json,png}."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from nola.errors import fail, run_cli
from nola.fileio import atomic_open

RUNS = [("none", "no adaptation (pre-trained base)"), ("lora_r4", "LoRA r=4"), ("lora_r1", "LoRA r=1"),
        ("nola", "NOLA r=8, k=l=100 (q,v)"), ("qnola3", "NOLA r=8, k=l=100, 3-bit")]
METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")


def collect(run_dir: Path) -> dict:
    from nola.gpt2.checkpoint import saved_bytes  # torch only when a run is collected

    scores = json.loads((run_dir / "scores.json").read_text())["scores"]
    row = {"scores": {m: scores[m] for m in METRICS}, "params": 0, "adapter_bytes": None,
           "train_seconds": int((run_dir / "train_seconds.txt").read_text()), "valid": []}
    log = run_dir / "train.log"
    if log.exists():
        found = re.findall(r"trainable parameters: ([\d,]+)", log.read_text())
        row["params"] = int(found[-1].replace(",", "")) if found else None
        row["adapter_bytes"] = saved_bytes((run_dir / "checkpoint.txt").read_text().strip())
        for line in (run_dir / "log.jsonl").read_text().splitlines():
            item = json.loads(line)
            if item.get("split") == "valid":
                row["valid"].append((item["step"], item["loss"]))
    return row


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for name, label in RUNS:
        points = rows.get(name, {}).get("valid") or []
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (E2E, held-out MRs)")
    ax.set_title("Miniature reproduction: adapting a small GPT-2 to E2E")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", required=True, help="folder with one sub-folder per run")
    parser.add_argument("--out", required=True, help="output prefix (writes .md, .json, .png)")
    parser.add_argument("--wall_seconds", type=int, required=True)
    args = parser.parse_args()
    runs = Path(args.runs)
    rows = {name: collect(runs / name) for name, _ in RUNS if (runs / name / "scores.json").exists()}
    if not rows:
        fail(f"no finished runs under {runs}: run scripts/mini_reproduction.sh first")
    out = Path(args.out)
    plot(rows, out.with_suffix(".png"))
    lines = [
        "| run | trainable params | adapter bytes | BLEU | NIST | METEOR | ROUGE-L | CIDEr | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in RUNS:
        if name in rows:
            r = rows[name]
            s = r["scores"]
            size = f"{r['adapter_bytes']:,}" if r["adapter_bytes"] else "—"
            lines.append(f"| {label} | {r['params']:,} | {size} | {s['BLEU']:.4f} | {s['NIST']:.4f} | "
                         f"{s['METEOR']:.4f} | {s['ROUGE_L']:.4f} | {s['CIDEr']:.4f} | {r['train_seconds']} |")
    with atomic_open(out.with_suffix(".md")) as handle:
        handle.write("\n".join(lines) + f"\n\nWall time of the whole script: {args.wall_seconds / 60:.1f} min.\n")
    with atomic_open(out.with_suffix(".json")) as handle:
        json.dump({"wall_seconds": args.wall_seconds, "runs": rows}, handle, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    run_cli(main)
