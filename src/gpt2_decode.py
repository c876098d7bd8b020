"""Turn a gpt2_beam.py sample file into reference and prediction files for the scorers.

E2E: ``--output_ref_file`` is one file (reference groups separated by blank lines);
WebNLG / DART: it is a folder receiving ``reference0 .. reference{ref_num-1}``.
"""
from __future__ import annotations

import argparse

from nola.config import FILTERS, PADS, REF_TYPES
from nola.gpt2.decode import decode_files
from nola.errors import run_cli
from nola.log import get_logger

log = get_logger("gpt2_decode")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Decode beam-search samples into reference/prediction files")
    parser.add_argument("--vocab", required=True, help="folder with encoder.json and vocab.bpe")
    parser.add_argument("--sample_file", required=True, help="predictions written by gpt2_beam.py")
    parser.add_argument("--input_file", required=True, help="the formatted jsonl the samples were decoded from")
    parser.add_argument("--output_ref_file", required=True, help="reference file (e2e) or folder (webnlg, dart)")
    parser.add_argument("--output_pred_file", required=True, help="prediction file, one line per distinct context")
    parser.add_argument("--ref_type", default="e2e", choices=REF_TYPES, help="reference layout")
    parser.add_argument("--ref_num", type=int, default=4, help="number of reference files (webnlg, dart)")
    parser.add_argument("--ref_pad", default="first", choices=PADS,
                        help="webnlg/dart contexts with fewer than --ref_num references: repeat the first "
                             "reference (the original pipeline) or write empty lines")
    parser.add_argument("--tokenize", action="store_true", help="split off every non-word character")
    parser.add_argument("--lower", action="store_true", help="lower-case references and predictions")
    parser.add_argument("--filter", default="all", choices=FILTERS,
                        help="WebNLG: only contexts whose category was seen / unseen in training")
    args = parser.parse_args(argv)
    count = decode_files(args.sample_file, args.input_file, args.vocab, args.output_ref_file, args.output_pred_file,
                         args.ref_type, args.ref_num, args.tokenize, args.lower, args.filter, args.ref_pad)
    log.info("wrote %d contexts: references %s, predictions %s", count, args.output_ref_file, args.output_pred_file)


if __name__ == "__main__":
    run_cli(main)
