"""Append the JSON row of one finished paper run to results/<dataset>.jsonl (used by common.sh)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

from nola.errors import run_cli
from nola.log import get_logger
from results import DATASETS, append_row, make_row, scores_from_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="row name (the script's name)")
    parser.add_argument("--model", required=True, help="model card, e.g. gpt2.md")
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--checkpoint", required=True, type=Path, help="the adapter folder model.<step>/ (or a model.<step>.pt) that was decoded")
    parser.add_argument("--train_log", type=Path, help="training log (parameter count for non-adapter files)")
    parser.add_argument("--scores", nargs="+", required=True,
                        help="scorer output: one file (e2e, dart) or U=FILE S=FILE A=FILE (webnlg)")
    parser.add_argument("--commands", required=True, type=Path, help="file with the commands run, one a line")
    parser.add_argument("--nproc", type=int, required=True, help="processes per node used")
    parser.add_argument("--results_dir", type=Path, default=REPO / "results")
    args = parser.parse_args()

    commands = [line for line in args.commands.read_text(encoding="utf-8").splitlines() if line.strip()]
    row = make_row(args.name, args.model, args.dataset, args.checkpoint,
                   scores_from_files(args.dataset, args.scores), commands, args.nproc, REPO, args.train_log)
    out = args.results_dir / f"{args.dataset}.jsonl"
    append_row(out, row)
    get_logger("results").info("appended %s to %s: %s", args.name, out, json.dumps(row["scores"], sort_keys=True))


if __name__ == "__main__":
    run_cli(main)
