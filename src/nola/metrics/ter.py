"""Translation Edit Rate as the ``pyter3`` package (used by WebNLG/GenerationEval) computes it.

pyter's TER is a greedy approximation of tercom's: while some block shift lowers the word-level
Levenshtein distance to the reference, apply the shift that lowers it most (ties: the
lexicographically greatest shifted word list), counting one edit per shift; TER is
``(shifts + remaining edit distance) / len(reference)``. The candidate shifts are, for every
hypothesis position ``i`` and reference position ``j != i`` whose words agree, the longest run
of agreeing words from there, moved so that it starts at index ``j`` (Python list insertion).
Unlike tercom there is no limit on shift size or distance and no requirement that the moved
words be mismatched first.

This implementation gives the same numbers; it scores all candidate shifts of one step in a
single NumPy dynamic programme instead of one cached Levenshtein call per candidate.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _edit_distances(rows: np.ndarray, ref_ids: np.ndarray, mismatch: np.ndarray) -> np.ndarray:
    """Levenshtein distance of every row of ``rows`` (word ids, equal lengths) to ``ref_ids``.

    ``mismatch[w, k]`` is 1 where word id ``w`` differs from ``ref_ids[k]``. The DP keeps
    ``e[k] = d[k] - k``, which turns the insertion chain ``d[k] = min(s[k], d[k-1] + 1)`` into
    a running minimum.
    """
    count, length = rows.shape
    ref_len = len(ref_ids)
    diag = (mismatch - 1)[rows]  # (count, length, ref_len): substitution cost - 1
    e = np.zeros((count, ref_len + 1), dtype=np.int32)
    step = np.empty_like(e)
    keep = np.empty((count, ref_len), dtype=np.int32)
    for j in range(length):
        step[:, 0] = j + 1
        np.add(e[:, :-1], diag[:, j], out=step[:, 1:])
        np.add(e[:, 1:], 1, out=keep)
        np.minimum(step[:, 1:], keep, out=step[:, 1:])
        np.minimum.accumulate(step, axis=1, out=e)
    return e[:, -1] + ref_len


def _shifts(hyp: list[int], ref: list[int], where: dict[int, list[int]]) -> list[list[int]]:
    """Every candidate shifted hypothesis of one pyter step; ``where[w]``: positions of w in ``ref``."""
    out = []
    for i, word in enumerate(hyp):
        for j in where.get(word, ()):
            if i == j:
                continue
            length = 1
            while i + length < len(hyp) and j + length < len(ref) and hyp[i + length] == ref[j + length]:
                length += 1
            shifted = hyp[:i] + hyp[i + length:]
            shifted[j:j] = hyp[i:i + length]
            out.append(shifted)
    return out


def ter(hyp: Sequence[str], ref: Sequence[str]) -> float:
    """pyter's TER of token list ``hyp`` against token list ``ref`` (which must not be empty)."""
    if not ref:
        raise ZeroDivisionError("TER needs a non-empty reference")
    # Word ids in sorted word order, so comparing id lists compares the word lists (pyter's tie-break).
    vocab = {word: k for k, word in enumerate(sorted(set(hyp) | set(ref)))}
    cur = [vocab[w] for w in hyp]
    ref_ids = [vocab[w] for w in ref]
    where: dict[int, list[int]] = {}
    for j, word in enumerate(ref_ids):
        where.setdefault(word, []).append(j)
    ref_arr = np.array(ref_ids, dtype=np.int32)
    mismatch = (np.arange(len(vocab), dtype=np.int32)[:, None] != ref_arr[None, :]).astype(np.int32)
    shifts = 0
    while True:
        candidates = [cur] + _shifts(cur, ref_ids, where)
        rows = np.array(candidates, dtype=np.int32).reshape(len(candidates), len(cur))
        dist = _edit_distances(rows, ref_arr, mismatch)
        gains = dist[0] - dist[1:]
        if len(gains) == 0 or gains.max() <= 0:
            return (shifts + int(dist[0])) / len(ref)
        best = gains.max()
        cur = max(candidates[k + 1] for k in np.flatnonzero(gains == best))
        shifts += 1
