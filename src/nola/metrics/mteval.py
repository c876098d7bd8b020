"""BLEU and NIST as mteval-v13a computes them, and BLEU as Moses' multi-bleu-detok.perl does.

* :func:`mteval_tokenize` is mteval-v13a's "international-off" tokenisation, which
  multi-bleu-detok.perl copies verbatim.
* :func:`e2e_bleu_nist` reproduces ``metrics/pymteval.py`` of tuetschek/e2e-metrics (the ``-p``
  path of its ``measure_scores.py``): case-insensitive corpus BLEU-4 (closest reference length,
  shorter one on ties) and NIST-5 with information weights counted over all references of the
  corpus, 0-1 BLEU scale.
* :func:`multi_bleu_detok` reproduces multi-bleu-detok.perl (case-sensitive, 0-100 scale), the
  BLEU of WebNLG/GenerationEval.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

# mteval-v13a: character classes split off as tokens (ranges {-~, [-`, space-&, (-+, :-@ and /).
_PUNCT = re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])")
_PERIOD_COMMA_AFTER_NONDIGIT = re.compile(r"([^0-9])([\.,])")
_PERIOD_COMMA_BEFORE_NONDIGIT = re.compile(r"([\.,])([^0-9])")
_DASH_AFTER_DIGIT = re.compile(r"([0-9])(-)")
_SPACES = re.compile(r"\s+")

# NIST length penalty: beta such that a system/reference length ratio of 1.5 scores 0.5.
NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2
# pymteval's floors that keep BLEU defined when an n-gram order has no hits / no n-grams.
_TINY = 1e-15
_SMALL = 1e-9


def mteval_tokenize(text: str) -> str:
    """Tokenise ``text`` as mteval-v13a.pl (and multi-bleu-detok.perl) do; tokens joined by spaces."""
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    text = text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    text = f" {text} "
    text = _PUNCT.sub(r" \1 ", text)
    text = _PERIOD_COMMA_AFTER_NONDIGIT.sub(r"\1 \2 ", text)
    text = _PERIOD_COMMA_BEFORE_NONDIGIT.sub(r" \1 \2", text)
    text = _DASH_AFTER_DIGIT.sub(r"\1 \2 ", text)
    return _SPACES.sub(" ", text).strip()


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _max_ref_counts(refs: Sequence[Sequence[str]], n: int) -> Counter:
    """For every n-gram, its highest count in any one reference (the BLEU clipping count)."""
    merged: Counter = Counter()
    for ref in refs:
        for gram, count in _ngrams(ref, n).items():
            if count > merged[gram]:
                merged[gram] = count
    return merged


def _closest_ref_length(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """Reference length closest to ``hyp_len``; the shorter one on ties (mteval, multi-bleu)."""
    return min(ref_lens, key=lambda length: (abs(length - hyp_len), length))


def e2e_bleu_nist(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, float]:
    """Corpus BLEU (0-1) and NIST of ``hyps`` against ``refs`` as e2e-metrics' pymteval computes them.

    Tokens are lower-cased after tokenisation. As in pymteval, the candidate n-gram count of a
    segment is ``len(tokens) - n + 1`` even when that is negative (outputs shorter than 4 tokens
    lower the BLEU denominators), and orders without hits are floored at 1e-15/1e-9 rather than
    zeroing BLEU. Where pymteval would divide by zero (the n-gram counts of some order summing to
    zero over the corpus, for NIST), that order adds nothing instead.
    """
    max_bleu, max_nist = 4, 5
    bleu_hits = [0] * max_bleu
    bleu_lens = [0] * max_bleu
    bleu_ref_len = 0
    nist_hits: list[list[Counter]] = [[] for _ in range(max_nist)]
    nist_lens = [0] * max_nist
    ref_counts: list[Counter] = [Counter() for _ in range(max_nist + 1)]  # index 0: the empty n-gram
    avg_ref_len = 0.0
    for hyp, group in zip(hyps, refs):
        # pymteval splits on single spaces, so an empty text is one empty token.
        hyp_toks = [tok.lower() for tok in mteval_tokenize(hyp).split(" ")]
        ref_toks = [[tok.lower() for tok in mteval_tokenize(ref).split(" ")] for ref in group]
        for n in range(1, max_nist + 1):
            hyp_grams = _ngrams(hyp_toks, n)
            merged = _max_ref_counts(ref_toks, n)
            hits = Counter({gram: min(count, merged[gram]) for gram, count in hyp_grams.items() if merged[gram]})
            if n <= max_bleu:
                bleu_hits[n - 1] += sum(hits.values())
                bleu_lens[n - 1] += len(hyp_toks) - n + 1
            nist_hits[n - 1].append(hits)
            nist_lens[n - 1] += len(hyp_toks) - n + 1
            for ref in ref_toks:
                ref_counts[n].update(_ngrams(ref, n))
        bleu_ref_len += _closest_ref_length(len(hyp_toks), [len(ref) for ref in ref_toks])
        ref_total = sum(len(ref) for ref in ref_toks)
        ref_counts[0][()] += ref_total
        avg_ref_len += ref_total / len(ref_toks)

    # BLEU: brevity penalty (a zero system length counts as 1e-5) times the geometric mean.
    bp = 1.0
    if bleu_lens[0] <= bleu_ref_len:
        bp = math.exp(1.0 - bleu_ref_len / (float(bleu_lens[0]) if bleu_lens[0] else 1e-5))
    log_prec = sum(math.log(max(hits, _TINY) / max(length, _SMALL)) for hits, length in zip(bleu_hits, bleu_lens))
    bleu = bp * math.exp(log_prec / max_bleu)

    # NIST: information-weighted hits per order, times the length penalty.
    def info(gram: tuple) -> float:
        count = ref_counts[len(gram)].get(gram)
        if not count:
            return 0.0
        return math.log(ref_counts[len(gram) - 1][gram[:-1]] / float(count), 2)

    nist_sum = 0.0
    for n in range(max_nist):
        gained = 0.0
        for hits in nist_hits[n]:
            gained += sum(info(gram) * count for gram, count in hits.items())
        if nist_lens[n]:
            nist_sum += gained / nist_lens[n]
    nist = _nist_length_penalty(bleu_lens[0], avg_ref_len) * nist_sum
    return bleu, nist


def _nist_length_penalty(sys_len: int, avg_ref_len: float) -> float:
    ratio = sys_len / float(avg_ref_len) if avg_ref_len else 0.0
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    return math.exp(-NIST_BETA * math.log(ratio) ** 2)


@dataclass(frozen=True)
class MultiBleu:
    """multi-bleu-detok.perl's result: BLEU (0-100) and the figures on its output line."""

    bleu: float
    precisions: tuple[float, float, float, float]
    brevity_penalty: float
    hyp_len: int
    ref_len: int

    @property
    def line(self) -> str:
        """The line multi-bleu-detok.perl prints."""
        if self.ref_len == 0:
            return "BLEU = 0, 0/0/0/0 (BP=0, ratio=0, hyp_len=0, ref_len=0)"
        p1, p2, p3, p4 = (100 * p for p in self.precisions)
        return (f"BLEU = {self.bleu:.2f}, {p1:.1f}/{p2:.1f}/{p3:.1f}/{p4:.1f} "
                f"(BP={self.brevity_penalty:.3f}, ratio={self.hyp_len / self.ref_len:.3f}, "
                f"hyp_len={self.hyp_len}, ref_len={self.ref_len})")


def multi_bleu_detok(hyps: Sequence[str], refs: Sequence[Sequence[str]], lowercase: bool = False) -> MultiBleu:
    """Corpus BLEU (0-100) as Moses' multi-bleu-detok.perl computes it (case-sensitive by default).

    Orders without any hit contribute log = -9999999999 (BLEU ~ 0), as in the Perl script. Where
    the script dies (no reference words at all, or an empty system output shorter than the
    references) BLEU is 0.
    """
    correct = [0] * 4
    total = [0] * 4
    hyp_len = ref_len = 0
    for hyp, group in zip(hyps, refs):
        hyp_toks = mteval_tokenize(hyp.lower() if lowercase else hyp).split()
        ref_toks = [mteval_tokenize(ref.lower() if lowercase else ref).split() for ref in group]
        hyp_len += len(hyp_toks)
        ref_len += _closest_ref_length(len(hyp_toks), [len(ref) for ref in ref_toks])
        for n in range(1, 5):
            merged = _max_ref_counts(ref_toks, n)
            for gram, count in _ngrams(hyp_toks, n).items():
                total[n - 1] += count
                correct[n - 1] += min(count, merged[gram])
    precisions = tuple(c / t if t else 0.0 for c, t in zip(correct, total))
    if ref_len == 0 or hyp_len == 0:
        return MultiBleu(0.0, precisions, 0.0 if hyp_len == 0 else 1.0, hyp_len, ref_len)
    bp = math.exp(1 - ref_len / hyp_len) if hyp_len < ref_len else 1.0
    log_sum = sum(math.log(p) if p else -9999999999 for p in precisions)
    return MultiBleu(100 * bp * math.exp(log_sum / 4), precisions, bp, hyp_len, ref_len)
