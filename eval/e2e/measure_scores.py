#!/usr/bin/env python3
"""E2E NLG Challenge scorer: an offline drop-in for tuetschek/e2e-metrics' measure_scores.py.

    python eval/e2e/measure_scores.py e2e_ref.txt e2e_pred.txt -p [--json]
"""
from __future__ import annotations

import argparse
import json
import time

from nola.errors import run_cli
from nola.log import get_logger
from nola.metrics import e2e

ORIGINS = """\
where each number comes from (all equal to e2e-metrics' measure_scores.py -p to 4 decimals):
  BLEU     corpus BLEU-4, 0-1 scale, as e2e-metrics' pymteval.py (-p) computes it: mteval-v13a
           tokenisation, lower-cased, clipped n-gram counts, closest reference length (shorter
           on ties); re-implemented in nola.metrics.mteval.
  NIST     NIST-5 as pymteval.py: information weights counted over all references of the
           corpus, mteval-v13a length penalty (beta = -ln 0.5 / ln(1.5)^2); nola.metrics.mteval.
  METEOR   METEOR 1.5 (-l en -norm), the meteor-1.5.jar shipped by pycocoevalcap, run once for
           the corpus in -stdio mode like the COCO caption code, on PTB-tokenised, lower-cased
           texts without punctuation (Stanford CoreNLP 3.4.1 jar from pycocoevalcap).
  ROUGE_L  pycocoevalcap's Rouge (ROUGE-L F, beta 1.2, best reference, mean over outputs) on the
           same PTB-tokenised texts.
  CIDEr    pycocoevalcap's Cider (CIDEr-D, n <= 4, sigma 6, document frequencies from these
           references) on the same PTB-tokenised texts.
METEOR and the PTB tokenizer need a Java runtime (java on PATH); nothing is downloaded.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="E2E NLG Challenge evaluation (BLEU, NIST, METEOR, ROUGE_L, CIDEr), offline.",
        epilog=ORIGINS, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref_file", help="references: one group per system output, groups separated by a "
                        "blank line (no blank lines: one reference per output); or a TSV/CSV file of "
                        "(MR, reference) rows, consecutive identical MRs forming one group")
    parser.add_argument("sys_file", help="system outputs, one per line (or a TSV/CSV file of (MR, output) rows)")
    parser.add_argument("-p", "--python", action="store_true",
                        help="accepted for compatibility: BLEU/NIST always come from the Python mteval "
                             "port (the official script's -p path); there is no Perl path")
    parser.add_argument("-t", "--table", action="store_true", help="print one tab-separated table row")
    parser.add_argument("-H", "--header", action="store_true", help="with -t: print the table header first")
    parser.add_argument("--json", action="store_true", help="print the scores as a JSON object instead")
    args = parser.parse_args(argv)

    log = get_logger("eval.e2e")
    start = time.time()
    refs, outputs = e2e.load(args.ref_file, args.sys_file)
    log.info("scoring %d outputs against %d references", len(outputs), sum(map(len, refs)))
    scores = e2e.score(refs, outputs)
    seconds = time.time() - start
    log.info("scored in %.1f s", seconds)
    if args.json:
        print(json.dumps({"scores": scores, "ref_file": args.ref_file, "sys_file": args.sys_file,
                          "outputs": len(outputs), "seconds": round(seconds, 2)}, indent=1))
    elif args.table:
        if args.header:
            print("\t".join(("File",) + e2e.METRICS))
        print(e2e.format_table_row(scores, args.sys_file))
    else:
        print(e2e.format_scores(scores))


if __name__ == "__main__":
    run_cli(main)
