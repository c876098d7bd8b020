"""Cut matching small pieces out of an encoded split and its formatted twin: the first N unique
contexts (all their reference lines), optionally after skipping the first S contexts."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nola.errors import fail, run_cli
from nola.fileio import atomic_open


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--formatted", required=True, help="<split>_formatted.jsonl")
    parser.add_argument("--encoded", required=True, help="<split>.jsonl (same lines, token ids)")
    parser.add_argument("--contexts", type=int, required=True, help="how many unique contexts to keep")
    parser.add_argument("--skip", type=int, default=0, help="unique contexts to skip first")
    parser.add_argument("--out", required=True, help="output prefix: writes PREFIX.jsonl and PREFIX_formatted.jsonl")
    args = parser.parse_args()
    formatted = Path(args.formatted).read_text().splitlines()
    encoded = Path(args.encoded).read_text().splitlines()
    if len(formatted) != len(encoded):
        fail(f"{args.formatted} has {len(formatted)} lines but {args.encoded} has {len(encoded)}: rebuild them together")
    seen: list[str] = []
    keep = []
    for i, line in enumerate(formatted):
        context = json.loads(line)["context"]
        if not seen or seen[-1] != context:
            seen.append(context)
        if args.skip < len(seen) <= args.skip + args.contexts:
            keep.append(i)
    for path, lines in ((f"{args.out}.jsonl", encoded), (f"{args.out}_formatted.jsonl", formatted)):
        with atomic_open(path) as handle:
            handle.writelines(lines[i] + "\n" for i in keep)
    print(f"{args.out}: {len(keep)} lines, {min(args.contexts, max(0, len(seen) - args.skip))} contexts")


if __name__ == "__main__":
    run_cli(main)
