"""``gpt2_decode.py``: a beam-search sample file (token ids per input line, from ``gpt2_beam.py``) decoded
with GPT-2's BPE into the scorers' reference and prediction files (:mod:`nola.decoding.decode`'s layouts)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from nola.decoding.decode import group_outputs, write_outputs
from nola.errors import fail
from nola.fileio import check_writable
from nola.gpt2.tokenizer import load_tokenizer, read_encoder
from nola.train.formats import read_formatted
from nola.train.textio import text_lines


def read_samples(path: str | os.PathLike, num_lines: int, input_file: str,
                 vocab_size: int | None = None) -> dict[int, list[int]]:
    """``id -> token ids`` of a sample file, in file order; every input line id exactly once, every
    token id inside the vocabulary ``[0, vocab_size)`` when that is given."""
    samples: dict[int, list[int]] = {}
    if not Path(path).exists():
        fail(f"--sample_file {path} does not exist: run gpt2_beam.py first")
    for lineno, line in enumerate(text_lines(path, "--sample_file"), 1):
        if not line.strip():
            continue
        where = f"--sample_file {path}:{lineno}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            fail(f"{where}: not valid JSON ({exc.msg})")
        if not isinstance(item, dict) or type(item.get("id")) is not int or not isinstance(item.get("predict"), list):
            fail(f"{where}: expected {{\"id\": int, \"predict\": [token ids]}}")
        sid, tokens = item["id"], item["predict"]
        if not all(type(t) is int for t in tokens):
            fail(f"{where}: 'predict' must hold integer token ids")
        bad = next((t for t in tokens if t < 0 or (vocab_size is not None and t >= vocab_size)), None)
        if bad is not None:
            fail(f"{where}: token id {bad} is outside the vocabulary [0, {vocab_size}) of --vocab: the sample "
                 f"file was not decoded with this vocabulary (or is damaged); decode it again with gpt2_beam.py")
        if not 0 <= sid < num_lines:
            fail(f"{where}: id {sid} is not a line of --input_file {input_file} ({num_lines} lines): "
                 f"the sample file was made from another input file")
        if sid in samples:
            fail(f"{where}: id {sid} appears twice")
        samples[sid] = tokens
    missing = sorted(set(range(num_lines)) - set(samples))
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        fail(f"--sample_file {path} has no prediction for {len(missing)} of the {num_lines} lines of "
             f"--input_file {input_file} (ids {shown}): decode that input file completely")
    return samples


def decode_files(sample_file: str, input_file: str, vocab: str, output_ref_file: str, output_pred_file: str,
                 ref_type: str = "e2e", ref_num: int = 4, tokenize: bool = False, lower: bool = False,
                 keep: str = "all", pad: str = "first") -> int:
    """The whole of ``gpt2_decode.py``; returns the number of distinct contexts written."""
    if ref_num < 1:
        fail(f"--ref_num {ref_num}: must be >= 1 (the number of reference files to write)")
    if not Path(input_file).is_file():
        fail(f"--input_file {input_file} not found: pass the formatted jsonl the samples were decoded from")
    check_writable(output_ref_file, "--output_ref_file", folder=ref_type != "e2e")
    check_writable(output_pred_file, "--output_pred_file")
    vocab_size = len(read_encoder(vocab))
    records = read_formatted(input_file)
    samples = read_samples(sample_file, len(records), input_file, vocab_size)
    groups = group_outputs(records, samples, load_tokenizer(vocab), keep)
    write_outputs(groups, ref_type, output_ref_file, output_pred_file, ref_num, tokenize, lower, pad)
    return len(groups)
