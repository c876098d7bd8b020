"""Plot the train and validation loss of a gpt2_ft.py or llama_ft.py run: WORK_DIR/log.jsonl -> a PNG.

    python scripts/plot_log.py WORK_DIR [--out FILE.png]   (default: WORK_DIR/loss.png)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nola.errors import run_cli
from plot import plot_curves, read_curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dir", help="the --work_dir of a gpt2_ft.py run or the --output_dir of a llama_ft.py run (holds log.jsonl)")
    parser.add_argument("--out", default=None, help="PNG to write (default: WORK_DIR/loss.png)")
    parser.add_argument("--title", default=None, help="plot title (default: the folder's path)")
    args = parser.parse_args()
    work = Path(args.work_dir)
    out = plot_curves(read_curves(work), args.out or work / "loss.png", args.title or str(work))
    print(f"wrote {out}")


if __name__ == "__main__":
    run_cli(main)
