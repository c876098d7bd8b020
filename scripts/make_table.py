"""Render results/*.jsonl beside results/published.json as Markdown (stdout, and --out FILE)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from nola.errors import run_cli
from nola.fileio import atomic_open
from paper.results import load_published, load_rows, render_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=REPO / "results",
                        help="folder with <dataset>.jsonl rows (default: results/)")
    parser.add_argument("--published", type=Path, default=None,
                        help="published numbers (default: <results>/published.json)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    published = load_published(args.published or args.results / "published.json")
    table = render_table(published, load_rows(args.results))
    sys.stdout.write(table)
    if args.out:
        with atomic_open(args.out) as handle:
            handle.write(table)


if __name__ == "__main__":
    run_cli(main)
