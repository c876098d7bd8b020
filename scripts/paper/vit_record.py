"""Append the JSON row of one finished k-shot cell (a ViT row on one dataset at k shots: every
sampling seed x run) to results/<dataset>.jsonl: accuracy mean and std over the runs (used by vit_common.sh)."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

from nola.errors import fail, run_cli
from nola.log import get_logger
from results import VIT_DATASETS, append_row, git_commit

RESULT_FILE, TRAINED_FILE = "result.json", "trained.safetensors"  # written by src/vit_ft.py (nola.vit.train)


def summary(accuracies: list[float]) -> dict[str, float]:
    """Mean and population standard deviation (numpy's ``std``) over the runs, as fractions."""
    return {"ACC": statistics.fmean(accuracies), "ACC_STD": statistics.pstdev(accuracies)}


def read_result(run: Path) -> dict:
    path = run / RESULT_FILE
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        fail(f"{path} is missing: that run did not finish (see its log); rerun the row with --resume")
    except ValueError as exc:
        fail(f"{path}: not JSON ({exc}); rerun that run")
    if not isinstance(result, dict) or not isinstance(result.get("accuracy"), (int, float)):
        fail(f"{path}: no 'accuracy'; rerun that run")
    return result


def make_row(name: str, model: str, dataset: str, runs: list[Path], commands: list[str]) -> dict:
    results = [read_result(run) for run in runs]
    accuracies = [r["accuracy"] for r in results]
    trained = runs[0] / TRAINED_FILE
    return {
        "name": name, "model": model, "dataset": dataset,
        "params": results[0].get("trained_without_head"),
        "adapter_bytes": trained.stat().st_size if trained.is_file() else None,
        "checkpoint": str(trained), "scores": summary(accuracies), "accuracies": accuracies,
        "runs": [str(run) for run in runs], "weights": results[0].get("weights"),
        "git_commit": git_commit(REPO), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commands": commands,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="row id, e.g. vit_l_nola_mlp_k1024_cifar100_5shot")
    parser.add_argument("--model", required=True, help="vit-b or vit-l")
    parser.add_argument("--dataset", required=True, choices=VIT_DATASETS)
    parser.add_argument("--runs", nargs="+", required=True, type=Path, help="the runs' --outdir folders")
    parser.add_argument("--commands", required=True, type=Path, help="file with the commands run, one a line")
    parser.add_argument("--results_dir", type=Path, default=REPO / "results")
    args = parser.parse_args()
    commands = [line for line in args.commands.read_text(encoding="utf-8").splitlines() if line.strip()]
    row = make_row(args.name, args.model, args.dataset, args.runs, commands)
    out = args.results_dir / f"{args.dataset}.jsonl"
    append_row(out, row)
    get_logger("results").info("appended %s to %s: accuracy %.2f (%.2f) over %d runs", args.name, out,
                               100 * row["scores"]["ACC"], 100 * row["scores"]["ACC_STD"], len(args.runs))


if __name__ == "__main__":
    run_cli(main)
