"""Raw E2E file (one MR||reference per line) -> formatted jsonl ({"context", "completion"} per line).

Usage: python src/format_converting_e2e.py RAW_FILE OUTPUT_formatted.jsonl
"""
from __future__ import annotations

import argparse

from nola.errors import run_cli
from nola.train.formats import convert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="raw E2E file")
    parser.add_argument("output", help="formatted jsonl to write")
    args = parser.parse_args()
    examples, unique = convert("e2e", args.input, args.output)
    print(f"{args.output}: {examples} examples, {unique} unique contexts")


if __name__ == "__main__":
    run_cli(main)
