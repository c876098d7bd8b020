"""Alpaca instruction data for causal-LM fine-tuning, tokenised as UCDvision/NOLA's llama/qlora.py does.

A record ``{instruction, input, output}`` becomes a *source*, the tokenizer's BOS text followed by
the Alpaca prompt (the variant with ``### Input:`` when ``input`` is not empty), and a *target*,
the output followed by the EOS text. Both are tokenised separately without added special tokens
(so ``<s>`` / ``</s>`` are parsed from the text), each truncated on the right (``source_max_len``,
``target_max_len``), and concatenated; the labels are ``-100`` on the source, so the loss is on
the response tokens (and EOS) only. Batches are right-padded; padded positions are masked out of
attention and loss.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch

from nola.errors import fail
from nola.train.textio import read_text

IGNORE_INDEX = -100
ALPACA_FILE = "data/alpaca/alpaca_data.json"  # what scripts/llama/download_data.sh writes
PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response: ")
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response: ")


def alpaca_prompt(record: dict) -> str:
    """The prompt for one record (the response follows it directly)."""
    template = PROMPT_INPUT if record.get("input", "") != "" else PROMPT_NO_INPUT
    return template.format(instruction=record["instruction"], input=record.get("input", ""))


def dataset_path(dataset: str, flag: str = "--dataset") -> Path:
    """``flag``'s value: ``alpaca`` (the downloaded file) or a path to a JSON file."""
    if dataset == "alpaca":
        path = Path(ALPACA_FILE)
        if not path.is_file():
            fail(f"{flag} alpaca: {path} is missing: run `bash scripts/llama/download_data.sh` in this folder, "
                 f"or pass {flag} PATH.json")
        return path
    path = Path(dataset)
    if not path.is_file():
        fail(f"{flag} {dataset}: no such file; give alpaca, a JSON file of {{instruction, input, output}} "
             f"records or a data-to-text *_formatted.jsonl")
    return path


def read_records(path: str | os.PathLike, flag: str = "--dataset") -> list[dict]:
    """The records of an Alpaca-format JSON list (or JSON lines); one-line errors for bad files."""
    text = read_text(path, flag)
    try:
        records = json.loads(text) if text.lstrip().startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        fail(f"{flag} {path}: not valid JSON ({exc}); give a list of {{instruction, input, output}} records")
    for index, record in enumerate(records):
        if isinstance(record, dict) and "context" in record and "completion" in record:
            fail(f"{flag} {path}: record {index} is a data-to-text record, read only from a file named "
                 f"*_formatted.jsonl (text, as create_datasets.sh writes it; not the GPT-2-encoded .jsonl)")
        if not isinstance(record, dict) or not isinstance(record.get("instruction"), str) \
                or not isinstance(record.get("output"), str) or not isinstance(record.get("input", ""), str):
            fail(f"{flag} {path}: record {index} lacks a string 'instruction' and 'output' "
                 f"('input' optional); fix the file")
    if not records:
        fail(f"{flag} {path}: no records")
    return records


def encode(record: dict, tokenizer, source_max_len: int, target_max_len: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one record: labels are IGNORE_INDEX on the source tokens."""
    source = f"{tokenizer.bos_token or ''}{alpaca_prompt(record)}"
    target = f"{record['output']}{tokenizer.eos_token or ''}"
    src = tokenizer(source, max_length=source_max_len, truncation=True, add_special_tokens=False)["input_ids"]
    tgt = tokenizer(target, max_length=target_max_len, truncation=True, add_special_tokens=False)["input_ids"]
    return src + tgt, [IGNORE_INDEX] * len(src) + tgt


def collate(items: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (IGNORE_INDEX on padding)."""
    width = max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, (x, y) in enumerate(items):
        ids[row, :len(x)] = torch.tensor(x)
        labels[row, :len(y)] = torch.tensor(y)
        mask[row, :len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pad_token_id(tokenizer) -> int:
    """The id used for padding: the tokenizer's pad, else its unk, else 0 (padding is masked anyway)."""
    for name in ("pad_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return value
    return 0
