"""The E2E NLG Challenge scorer (tuetschek/e2e-metrics ``measure_scores.py``), offline.

Inputs are read as that script reads them: every line stripped; the reference file holds one
group of references per system output, groups separated by a blank line (a file without blank
lines is single-reference); ``.tsv``/``.csv`` files hold (MR, text) rows, consecutive rows with
the same MR forming one reference group.

* BLEU and NIST: :func:`nola.metrics.mteval.e2e_bleu_nist` (the script's ``-p`` path, pymteval).
* METEOR, ROUGE-L and CIDEr: the COCO caption code the script runs: every text PTB-tokenised,
  lower-cased and stripped of punctuation (:func:`nola.metrics.java.ptb_tokenize`), then
  METEOR 1.5 (:class:`nola.metrics.java.Meteor`), ``pycocoevalcap``'s ``Rouge`` (ROUGE-L,
  beta 1.2, mean over items) and ``Cider`` (CIDEr-D, sigma 6, n-grams up to 4).
"""
from __future__ import annotations

import csv
import os
import re
from typing import Sequence

from nola.errors import fail
from nola.metrics.java import Meteor, ptb_tokenize
from nola.metrics.mteval import e2e_bleu_nist
from nola.train.textio import read_text

METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
_TABLE = re.compile(r"\.[ct]sv$", re.I)
# Encoding damage in the released E2E CSV files that the official reader repairs.
_MOJIBAKE = (("Ł", "£"), ("Â£", "£"), ("Ã©", "é"), ("ã©", "é"))
_EDGE_QUOTES = (re.compile(r"^\s*['\"]?\s*"), re.compile(r"\s*['\"]?\s*$"))


def _read_table(path: str | os.PathLike, what: str) -> list[tuple[str, str]]:
    """(MR, text) rows of a TSV/CSV file; a header row starting with ``mr`` is skipped."""
    text = read_text(path, what).lstrip("\ufeff")
    for bad, good in _MOJIBAKE:
        text = text.replace(bad, good)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        fail(f"{what} {path} is empty: pass a file with MR and text columns")
    if any("\t" in line for line in lines):
        rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    else:
        rows = list(csv.reader(lines))
    if re.match(r'^"?mr', rows[0][0], re.I):
        rows = rows[1:]
    bad = [number for number, row in enumerate(rows, start=1) if len(row) != 2]
    if bad:
        fail(f"{what} {path}: rows {bad[:5]} do not have exactly 2 columns (MR, text): fix the file")
    start, end = _EDGE_QUOTES
    return [tuple(end.sub("", start.sub("", cell)) for cell in row) for row in rows]  # type: ignore[misc]


def read_references(path: str | os.PathLike) -> list[list[str]]:
    """Reference groups: blank-line separated (text file) or grouped by consecutive MRs (TSV/CSV)."""
    what = "reference file"
    if _TABLE.search(str(path)):
        groups: list[list[str]] = []
        last_mr = None
        for mr, ref in _read_table(path, what):
            if mr != last_mr:
                groups.append([])
                last_mr = mr
            groups[-1].append(ref)
        return groups
    lines = [line.strip() for line in read_text(path, what).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        fail(f"{what} {path} is empty: pass the reference groups, separated by blank lines")
    groups = [[]]
    for number, line in enumerate(lines, start=1):
        if line:
            groups[-1].append(line)
        elif groups[-1]:
            groups.append([])
        else:
            fail(f"{what} {path}: empty reference group at line {number} (blank lines in a row or "
                 f"at the start): separate groups by exactly one blank line")
    if len(groups) == 1:  # no blank line at all: one reference per output
        groups = [[line] for line in groups[0]]
    return groups


def read_outputs(path: str | os.PathLike) -> list[str]:
    """System outputs, one per line (or the text column of a TSV/CSV file)."""
    what = "system output file"
    if _TABLE.search(str(path)):
        return [text for _, text in _read_table(path, what)]
    lines = [line.strip() for line in read_text(path, what).splitlines()]
    if not lines:
        fail(f"{what} {path} is empty: pass one output per line")
    return lines


def load(ref_path: str | os.PathLike, sys_path: str | os.PathLike) -> tuple[list[list[str]], list[str]]:
    """Reference groups and outputs, checked to pair up one to one."""
    outputs = read_outputs(sys_path)
    refs = read_references(ref_path)
    if len(refs) != len(outputs):
        fail(f"{ref_path} has {len(refs)} reference groups but {sys_path} has {len(outputs)} outputs: "
             f"they must pair up one group per output line")
    return refs, outputs


def score(refs: Sequence[Sequence[str]], outputs: Sequence[str], meteor: Meteor | None = None) -> dict[str, float]:
    """BLEU, NIST, METEOR, ROUGE_L and CIDEr of ``outputs`` against ``refs`` (e2e-metrics numbers).

    ``meteor``: a running METEOR process to use (and leave running); by default one is started
    first, so that the JVM loads its paraphrase table while the rest is computed, and ended.
    """
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(refs) != len(outputs) or any(not group for group in refs):
        raise ValueError("need one non-empty reference group per output")
    own = meteor is None
    if meteor is None:
        meteor = Meteor()
    try:
        bleu, nist = e2e_bleu_nist(outputs, refs)
        flat_refs = [ref for group in refs for ref in group]
        tokens = ptb_tokenize(flat_refs + list(outputs))
        gts: dict[int, list[str]] = {}
        pos = 0
        for i, group in enumerate(refs):
            gts[i] = tokens[pos:pos + len(group)]
            pos += len(group)
        res = {i: [tokens[pos + i]] for i in range(len(outputs))}
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        meteor_score, _ = meteor.score([res[i][0] for i in res], [gts[i] for i in res])
    finally:
        if own:
            meteor.close()
    return {"BLEU": float(bleu), "NIST": float(nist), "METEOR": float(meteor_score),
            "ROUGE_L": float(rouge), "CIDEr": float(cider)}


def format_scores(scores: dict[str, float]) -> str:
    """The official output block: ``SCORES:``, a rule, then ``NAME: x.xxxx`` per metric."""
    return "SCORES:\n==============\n" + "".join(f"{name}: {scores[name]:.4f}\n" for name in METRICS)


def format_table_row(scores: dict[str, float], sys_name: str) -> str:
    """One row of the official ``-t`` table (tab-separated: file name, then each metric)."""
    return "\t".join([sys_name] + [f"{scores[name]:.4f}" for name in METRICS])
