"""The WebNLG / DART scorer (WebNLG/GenerationEval ``eval.py``, English), offline.

Inputs: ``reference0 .. reference{N-1}`` (``<prefix><i>``; the prefix itself when N is 1) and one
hypothesis file, one item per line. GenerationEval splits the files on ``\\n``, so a final
newline makes it score an extra empty item (METEOR then fails with -1 and TER averages in a 1);
here a single final newline ends the last line instead, which gives the numbers it prints for
the same files without their final newline.

* BLEU: :func:`nola.metrics.mteval.multi_bleu_detok` on the raw lines (what the script gets from
  Moses' multi-bleu-detok.perl), 0-100.
* BLEU NLTK: ``nltk.translate.bleu_score.corpus_bleu`` with ``SmoothingFunction().method3`` on
  the tokenised texts, empty references dropped (as the script does).
* METEOR: METEOR 1.5 ``-l en -norm`` against all N tokenised references of each item, corpus
  score (:class:`nola.metrics.java.Meteor`).
* TER: :func:`nola.metrics.ter.ter` on whitespace-split tokenised texts, the minimum over the
  references of each item (an empty reference counts 1), averaged over items.

Tokenised means NLTK's ``word_tokenize``, i.e. its Treebank-style ``NLTKWordTokenizer``. The
official call first splits sentences with the Punkt model, which cannot be downloaded here; this
is ``word_tokenize(..., preserve_line=True)``. The two differ only where a period glued to a
word ends a sentence inside a line; the decode step splits every non-word character off, so on
its files they agree.
"""
from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Sequence

from nola.errors import fail
from nola.metrics.java import Meteor
from nola.metrics.mteval import multi_bleu_detok
from nola.metrics.ter import ter
from nola.train.textio import file_lines, read_text

if TYPE_CHECKING:
    from nltk.tokenize import NLTKWordTokenizer

METRICS = ("bleu", "meteor", "ter")


def reference_paths(prefix: str, num_refs: int) -> list[str]:
    """GenerationEval's reference file names: ``prefix0 .. prefix{N-1}``, or ``prefix`` if N is 1."""
    return [prefix + str(i) for i in range(num_refs)] if num_refs > 1 else [prefix]


def load(prefix: str, hyp_path: str | os.PathLike, num_refs: int) -> tuple[list[list[str]], list[str]]:
    """Per-item reference lists (``num_refs`` each) and hypotheses, checked to line up."""
    if num_refs < 1:
        fail(f"-nr {num_refs}: the number of references must be at least 1")
    hyps = file_lines(read_text(hyp_path, "hypothesis file"))
    if not hyps:
        fail(f"hypothesis file {hyp_path} is empty: pass one output per line")
    columns = []
    for path in reference_paths(prefix, num_refs):
        lines = file_lines(read_text(path, "reference file"))
        if len(lines) != len(hyps):
            fail(f"reference file {path} has {len(lines)} lines but hypothesis file {hyp_path} has "
                 f"{len(hyps)}: they must have one line per item")
        columns.append(lines)
    return [list(refs) for refs in zip(*columns)], hyps


@functools.lru_cache(maxsize=1)
def _tokenizer() -> "NLTKWordTokenizer":
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def word_tokenize(text: str) -> str:
    """NLTK's Treebank-style word tokenisation of one line, tokens joined by spaces."""
    return " ".join(_tokenizer().tokenize(text))


def _bleu_nltk(refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    kept_refs, kept_hyps = [], []
    for group, hyp in zip(refs, hyps):
        group = [ref.split() for ref in group if ref.strip()]
        if group:
            kept_refs.append(group)
            kept_hyps.append(hyp.split())
    return float(corpus_bleu(kept_refs, kept_hyps, smoothing_function=SmoothingFunction().method3))


def _item_ter(hyp: str, refs: Sequence[str]) -> float:
    """Minimum TER over the references of one item; an empty reference scores 1."""
    return min(ter(hyp.split(), ref.split()) if ref.split() else 1.0 for ref in dict.fromkeys(refs))


def score(refs: Sequence[Sequence[str]], hyps: Sequence[str], metrics: Sequence[str] = METRICS,
          meteor: Meteor | None = None) -> dict[str, object]:
    """GenerationEval's numbers: ``BLEU`` (0-100) with ``BLEU_line`` and ``BLEU_NLTK``, ``METEOR``, ``TER``.

    ``meteor``: a running METEOR process to use (and leave running); by default one is started
    first, so that the JVM loads while BLEU and TER are computed, and ended.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}")
    result: dict[str, object] = {}
    own = meteor is None and "meteor" in metrics
    if own:
        meteor = Meteor()
    try:
        tok_hyps = [word_tokenize(h) for h in hyps]
        tok_refs = [[word_tokenize(r) for r in group] for group in refs]
        if "bleu" in metrics:
            multi = multi_bleu_detok(hyps, refs)
            result["BLEU"] = multi.bleu
            result["BLEU_line"] = multi.line
            result["BLEU_NLTK"] = _bleu_nltk(tok_refs, tok_hyps)
        if "ter" in metrics:
            result["TER"] = sum(_item_ter(h, group) for h, group in zip(tok_hyps, tok_refs)) / len(tok_hyps)
        if "meteor" in metrics:
            assert meteor is not None
            result["METEOR"] = meteor.score(tok_hyps, tok_refs)[0]
    finally:
        if own and meteor is not None:
            meteor.close()
    return result
