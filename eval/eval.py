#!/usr/bin/env python3
"""WebNLG / DART scorer: an offline drop-in for WebNLG/GenerationEval's eval.py (BLEU, METEOR, TER).

    python eval/eval.py -R refs/reference -H hypothesis -nr 6 -m bleu,meteor,ter [--json]
"""
from __future__ import annotations

import argparse
import json
import time

from nola.errors import fail, run_cli
from nola.log import get_logger
from nola.metrics import webnlg

ORIGINS = """\
where each number comes from (equal to GenerationEval's eval.py on the same files):
  BLEU       Moses multi-bleu-detok.perl re-implemented (nola.metrics.mteval): mteval-v13a
             tokenisation of the raw lines, case-sensitive, closest reference length (shorter
             on ties), 0-100, printed with 2 decimals as the Perl script prints it.
  BLEU NLTK  nltk corpus_bleu, SmoothingFunction().method3, on NLTK-tokenised texts, empty
             references dropped (printed with -m bleu, as GenerationEval does).
  METEOR     METEOR 1.5 (-l en -norm) over all N references of each item, corpus score; the
             meteor-1.5.jar shipped by pycocoevalcap, one JVM, on NLTK-tokenised texts.
  TER        pyter3's TER (nola.metrics.ter, same algorithm and tie-breaks) on NLTK-tokenised,
             whitespace-split texts: per item the minimum over the references (an empty one
             counts 1), averaged over items.
NLTK tokenisation is its Treebank-style word tokenizer per line (no Punkt sentence splitting,
whose model cannot be downloaded offline; identical on gpt2_decode.py's files). A single final
newline ends the last line (GenerationEval would score an extra empty item). METEOR needs a
Java runtime (java on PATH); nothing is downloaded.
"""


def _table(values: dict[str, float]) -> str:
    """GenerationEval's results table: headers, a rule, one row of right-aligned numbers."""
    widths = [max(len(name), len(f"{value}")) for name, value in values.items()]
    head = "  ".join(name.rjust(w) for name, w in zip(values, widths))
    rule = "  ".join("-" * w for w in widths)
    row = "  ".join(f"{value}".rjust(w) for value, w in zip(values.values(), widths))
    return f"{head}\n{rule}\n{row}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="WebNLG/DART evaluation (BLEU, METEOR, TER) as GenerationEval computes it, offline.",
        epilog=ORIGINS, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-R", "--reference", required=True,
                        help="reference prefix: files PREFIX0 .. PREFIX{N-1} (PREFIX itself when -nr is 1)")
    parser.add_argument("-H", "--hypothesis", required=True, help="hypothesis file, one output per line")
    parser.add_argument("-nr", "--num_refs", type=int, default=4, help="number of reference files (default 4)")
    parser.add_argument("-m", "--metrics", default="bleu,meteor,ter",
                        help="comma-separated subset of bleu,meteor,ter (default: all three)")
    parser.add_argument("-lng", "--language", default="en", help="only 'en' is supported")
    parser.add_argument("--json", action="store_true", help="print the scores as a JSON object instead")
    args = parser.parse_args(argv)

    metrics = [m.strip() for m in args.metrics.lower().split(",") if m.strip()]
    unknown = [m for m in metrics if m not in webnlg.METRICS]
    if unknown or not metrics:
        fail(f"-m {args.metrics}: offline metrics are {','.join(webnlg.METRICS)} "
             f"(chrF++, BERTScore and BLEURT need the official repository: eval/download_evalscript.sh)")
    if args.num_refs < 1:
        fail(f"-nr {args.num_refs}: must be >= 1 (the number of reference files PREFIX0 .. PREFIX{{N-1}})")
    if args.language != "en":
        fail(f"-lng {args.language}: only English is supported offline (Russian needs the official repository)")

    log = get_logger("eval.webnlg")
    start = time.time()
    refs, hyps = webnlg.load(args.reference, args.hypothesis, args.num_refs)
    log.info("scoring %d hypotheses against %d references each: %s", len(hyps), args.num_refs, ",".join(metrics))
    result = webnlg.score(refs, hyps, metrics)
    seconds = time.time() - start
    log.info("scored in %.1f s", seconds)
    if "BLEU_line" in result:
        log.info("multi-bleu-detok: %s", result["BLEU_line"])

    shown: dict[str, float] = {}
    if "bleu" in metrics:
        shown["BLEU"] = float(f"{float(result['BLEU']):.2f}")  # multi-bleu-detok prints %.2f
        shown["BLEU NLTK"] = round(float(result["BLEU_NLTK"]), 2)
    if "meteor" in metrics:
        shown["METEOR"] = round(float(result["METEOR"]), 2)
    if "ter" in metrics:
        shown["TER"] = round(float(result["TER"]), 2)
    if args.json:
        scores = {key: result[key] for key in ("BLEU_NLTK", "METEOR", "TER") if key in result}
        if "BLEU" in result:
            scores = {"BLEU": shown["BLEU"], "BLEU_unrounded": result["BLEU"], **scores}
        print(json.dumps({"scores": scores, "multi_bleu_line": result.get("BLEU_line"),
                          "reference": args.reference, "hypothesis": args.hypothesis,
                          "num_refs": args.num_refs, "items": len(hyps), "seconds": round(seconds, 2)}, indent=1))
    else:
        print(_table(shown))


if __name__ == "__main__":
    run_cli(main)
