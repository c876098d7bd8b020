"""Raw DART json file -> formatted jsonl ({"context", "completion"} per line).

Usage: python src/format_converting_dart.py RAW_FILE OUTPUT_formatted.jsonl
"""
from __future__ import annotations

import argparse

from nola.errors import run_cli
from nola.train.formats import convert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="raw DART json file (dart-v1.1.1-full-*.json)")
    parser.add_argument("output", help="formatted jsonl to write")
    args = parser.parse_args()
    examples, unique = convert("dart", args.input, args.output)
    print(f"{args.output}: {examples} examples, {unique} unique contexts")


if __name__ == "__main__":
    run_cli(main)
