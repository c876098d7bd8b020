"""Reference and prediction files laid out as the scorers read them (GPT-2's sample files through
:mod:`nola.gpt2.decode`, a causal LM's predictions through :mod:`nola.causal.causal_decode`).

As microsoft/LoRA's NLG ``gpt2_decode.py``: references are grouped per distinct context of the
formatted input file (order of first appearance), each cut at ``<|endoftext|>`` and at the first
blank line and stripped; a prediction is the GPT-2 BPE decoding of its token ids, cut the same way
(so at the first EOS, 50256 or the ``"\\n\\n"`` token 628), one line per distinct context.
``--lower`` lower-cases and ``--tokenize`` splits off every non-word character, in that order.

* ``e2e``: one reference file, each context's references one per line, groups separated by a
  blank line (what the E2E scorer reads);
* ``webnlg`` / ``dart``: a folder of ``reference0 .. reference{N-1}``, one line per context; a
  context with fewer than N references is padded with its first one (the original pipeline, and
  the official scores of the WebNLG fixture), or, with ``pad="empty"``, with empty lines.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nola.errors import fail
from nola.fileio import atomic_open

EOS_TEXT = "<|endoftext|>"
# Everything str.splitlines() splits on: a scorer reading the files must see one line per text.
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def cut(text: str) -> str:
    """Text up to the first ``<|endoftext|>`` and the first blank line, stripped."""
    return text.split(EOS_TEXT)[0].split("\n\n")[0].strip()


def word_tokenize(text: str) -> str:
    """Every non-word character as its own token, tokens joined by single spaces."""
    return " ".join(" ".join(re.split(r"(\W)", text)).split())


def post_process(text: str, tokenize: bool, lower: bool) -> str:
    """``--lower``, then ``--tokenize``; any line break left inside becomes a space, so that every
    text stays on its one line (the original wrote it as is and shifted the following lines)."""
    text = _LINE_BREAKS.sub(" ", text)
    if lower:
        text = text.lower()
    if tokenize:
        text = word_tokenize(text)
    return text


@dataclass
class Group:
    """One distinct context: its references and the prediction made for it."""

    references: list[str] = field(default_factory=list)
    prediction: str = ""


def keep_records(records: list[dict], keep: str = "all", flag: str = "--input_file") -> list[dict]:
    """The records ``--filter`` keeps (all, or WebNLG's seen / unseen categories); none is an error."""
    if keep != "all" and any("cate" not in r for r in records):
        fail(f"--filter {keep} needs WebNLG records with a 'cate' (seen category) field; use --filter all")
    kept = [r for r in records if keep == "all" or bool(r["cate"]) == (keep == "seen")]
    if not kept:
        fail(f"--filter {keep} leaves no contexts in {flag}")
    return kept


def group_outputs(records: list[dict], samples: dict[int, list[int]], tokenizer, keep: str = "all") -> list[Group]:
    """Groups per distinct context (first-appearance order) of the records ``keep`` selects; the
    prediction of a group is ``tokenizer.decode`` of its sample (GPT-2's BPE, or any ``transformers``
    tokenizer), cut at the first EOS text and blank line."""
    groups: dict[str, Group] = {}
    for record in keep_records(records, keep):
        groups.setdefault(record["context"], Group()).references.append(cut(record["completion"]))
    for sid, tokens in samples.items():  # a context's lines disagreeing: the last one wins, as in the original
        group = groups.get(records[sid]["context"])
        if group is not None:
            group.prediction = cut(tokenizer.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False))
    return list(groups.values())


def write_e2e(groups: list[Group], ref_path: str | os.PathLike, pred_path: str | os.PathLike,
              tokenize: bool = False, lower: bool = False) -> None:
    """E2E layout: reference groups separated by blank lines; one prediction line per group."""
    with atomic_open(ref_path, "w") as refs, atomic_open(pred_path, "w") as preds:
        for group in groups:
            for ref in group.references:
                refs.write(post_process(ref, tokenize, lower) + "\n")
            refs.write("\n")
            preds.write(post_process(group.prediction, tokenize, lower) + "\n")


def write_multi_reference(groups: list[Group], ref_dir: str | os.PathLike, pred_path: str | os.PathLike,
                          ref_num: int, tokenize: bool = False, lower: bool = False, pad: str = "first") -> None:
    """WebNLG / DART layout: ``ref_dir/reference{i}`` for i < ``ref_num``, one line per group."""
    if ref_num < 1:
        fail(f"--ref_num must be >= 1, got {ref_num}")
    ref_dir = Path(ref_dir)
    if ref_dir.exists() and not ref_dir.is_dir():
        fail(f"--output_ref_file {ref_dir} is a file; for --ref_type webnlg/dart it names a folder")
    columns: list[list[str]] = [[] for _ in range(ref_num)]
    for group in groups:
        for i, column in enumerate(columns):
            if i < len(group.references):
                column.append(post_process(group.references[i], tokenize, lower))
            else:
                column.append(post_process(group.references[0], tokenize, lower) if pad == "first" else "")
    for i, column in enumerate(columns):
        with atomic_open(ref_dir / f"reference{i}", "w") as handle:
            handle.write("".join(line + "\n" for line in column))
    with atomic_open(pred_path, "w") as handle:
        handle.write("".join(post_process(g.prediction, tokenize, lower) + "\n" for g in groups))


def write_outputs(groups: list[Group], ref_type: str, ref_path: str | os.PathLike, pred_path: str | os.PathLike,
                  ref_num: int = 4, tokenize: bool = False, lower: bool = False, pad: str = "first") -> None:
    """``groups`` in ``ref_type``'s layout: :func:`write_e2e` or :func:`write_multi_reference`."""
    if ref_type == "e2e":
        write_e2e(groups, ref_path, pred_path, tokenize, lower)
    else:
        write_multi_reference(groups, ref_path, pred_path, ref_num, tokenize, lower, pad)
