"""Formatted jsonl -> GPT-2 token ids ({"context": [ids], "completion": [ids]} per line).

With --add_bos --add_eos (as every published command uses): context ids + [50256],
completion ids = BPE(" " + completion) + [50256].
"""
from __future__ import annotations

import argparse

from nola.errors import run_cli
from nola.gpt2.tokenizer import encode_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="formatted jsonl (from src/format_converting_*.py)")
    parser.add_argument("--vocab", default="./vocab", help="folder holding encoder.json and vocab.bpe")
    parser.add_argument("--output", required=True, help="encoded jsonl to write")
    parser.add_argument("--add_bos", action="store_true", help="end the context with <|endoftext|> (50256)")
    parser.add_argument("--add_eos", action="store_true", help="end the completion with <|endoftext|> (50256)")
    args = parser.parse_args()
    counts = encode_file(args.input, args.output, args.vocab, args.add_bos, args.add_eos)
    print(f"{args.output}: {counts['examples']} examples, {counts['unique_contexts']} unique contexts, {counts['tokens']} tokens")


if __name__ == "__main__":
    run_cli(main)
