"""The examples ``src/llama_ft.py`` trains and validates on: Alpaca or data-to-text, as (ids, labels).

The kind of a ``--dataset`` / ``--eval_dataset`` file is its name's: ``*_formatted.jsonl`` is
data-to-text (E2E, WebNLG or DART ``{"context", "completion"}`` records as ``create_datasets.sh``
writes them, read by :func:`nola.train.formats.read_formatted`); ``alpaca`` or any other file is Alpaca
(:mod:`nola.causal.alpaca`). The suffix, not the records, decides, so a file is never read two ways; the
GPT-2-encoded ``<split>.jsonl`` beside a formatted file is refused with a pointer to the formatted one.

A data-to-text record becomes :func:`nola.causal.d2t.prompt_ids` + :func:`nola.causal.d2t.target_ids` (the one
prompt rule, shared with generation), with the labels ``IGNORE_INDEX`` on the prompt: the loss is on
the target and its EOS only. Both parts are cut on the right by ``--source_max_len`` /
``--target_max_len``, as Alpaca's are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch.utils.data import Dataset

from nola.causal import alpaca, d2t
from nola.errors import fail
from nola.train.formats import read_formatted

D2T_SUFFIX = "_formatted.jsonl"


def dataset_kind(dataset: str) -> str:
    """``"d2t"`` for a ``*_formatted.jsonl`` file, else ``"alpaca"``."""
    return "d2t" if dataset.endswith(D2T_SUFFIX) else "alpaca"


def read_examples(dataset: str, flag: str = "--dataset") -> tuple[str, list[dict]]:
    """(kind, records) of a dataset argument; one-line errors naming ``flag`` for a missing, empty or
    malformed file."""
    if dataset_kind(dataset) == "alpaca":
        return "alpaca", alpaca.read_records(alpaca.dataset_path(dataset, flag), flag)
    if not Path(dataset).is_file():
        fail(f"{flag} {dataset}: no such file; make it with `bash create_datasets.sh` "
             f"(data/<set>/<split>{D2T_SUFFIX})")
    records = read_formatted(dataset)
    if not records:
        fail(f"{flag} {dataset}: no records; give a non-empty {D2T_SUFFIX} file")
    return "d2t", records


def encode_d2t(record: dict, tokenizer, source_max_len: int, target_max_len: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one data-to-text record: labels IGNORE_INDEX on the prompt."""
    prompt = d2t.prompt_ids(tokenizer, record["context"])[:source_max_len]
    target = d2t.target_ids(tokenizer, record["completion"])[:target_max_len]
    return prompt + target, [alpaca.IGNORE_INDEX] * len(prompt) + target


ENCODERS = {"alpaca": alpaca.encode, "d2t": encode_d2t}


class CausalExamples(Dataset):
    """Records of one kind, tokenised on access (``(input ids, labels)`` per item)."""

    def __init__(self, kind: str, records: Sequence[dict], tokenizer, source_max_len: int,
                 target_max_len: int, flag: str = "--dataset") -> None:
        if kind == "d2t" and tokenizer.eos_token_id is None:
            fail(f"{flag}: the tokenizer has no end-of-sequence token, which data-to-text targets end with; "
                 f"use a model whose tokenizer defines eos_token")
        self.encode, self.records, self.tokenizer = ENCODERS[kind], list(records), tokenizer
        self.source_max_len, self.target_max_len = source_max_len, target_max_len

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[list[int], list[int]]:
        return self.encode(self.records[index], self.tokenizer, self.source_max_len, self.target_max_len)
