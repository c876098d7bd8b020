"""Compare a miniature-reproduction run's adapted runs with the same runs trained again (scripts/mini_retrain_check.sh).

For each run: every ``log.jsonl`` row without its timing, and every tensor of the last adapter, must be
equal (not close). Prints one line a run; when all are equal, points each old run's ``checkpoint.txt``
at the new adapter (so ``mini_report.py`` measures today's format), else exits 1 and changes nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from nola.gpt2.checkpoint import adapter_tensors, read_checkpoint, saved_bytes

RUNS = ("lora_r4", "lora_r1", "nola", "qnola3")


def log_rows(run: Path) -> list[dict]:
    rows = (json.loads(line) for line in (run / "log.jsonl").read_text().splitlines())
    return [{k: v for k, v in row.items() if k != "ms_per_batch"} for row in rows]


def last_adapter(run: Path) -> Path:
    """The adapter of the run's last step: the folder ``model.<step>/`` or an older ``model.<step>.pt``."""
    return max(run.glob("model.*"), key=lambda p: int(p.name.split(".")[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="MINI_DIR/runs of the finished run")
    parser.add_argument("--new", type=Path, required=True, help="the runs trained again")
    args = parser.parse_args()
    equal, moves = True, []
    for name in RUNS:
        old, new = args.old / name, args.new / name
        before, after = last_adapter(old), last_adapter(new)
        a, b = adapter_tensors(read_checkpoint(before)), adapter_tensors(read_checkpoint(after))
        same_tensors = sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
        same_rows = log_rows(old) == log_rows(new)
        equal &= same_tensors and same_rows
        print(f"{name}: log rows equal {same_rows} ({len(log_rows(old))} rows); adapter tensors equal {same_tensors}; "
              f"{before.name} {saved_bytes(before):,} B, {after.name} {saved_bytes(after):,} B")
        moves.append((old / "checkpoint.txt", after.resolve()))
    if not equal:
        sys.exit(1)
    for record, adapter in moves:
        record.write_text(f"{adapter}\n")


if __name__ == "__main__":
    main()
