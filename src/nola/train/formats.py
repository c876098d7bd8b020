"""Raw E2E / WebNLG / DART files -> formatted records, and the formatted jsonl files.

A record is ``{"context": str, "completion": str}``, one reference per record, plus for WebNLG
``"cate"``: whether the entry's category was seen in training (the ``--filter`` of
``gpt2_decode.py``). Context is the E2E meaning representation as written, or the triples
linearised as ``subject : property : object`` joined by `` | `` (DART properties lower-cased), as
the LoRA/NOLA pipeline does. Records keep the raw file's order, as microsoft/LoRA's converters
write them (entry by entry, each entry's references in turn): a context that recurs later in the
file is not moved up, since that would change the training order. Decoding groups references per
distinct context itself (:mod:`nola.decoding.decode`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable

from nola.errors import fail
from nola.fileio import atomic_open, check_writable
from nola.log import get_logger
from nola.train.textio import read_json, text_lines

Record = dict
_log = get_logger("formats")

WEBNLG_SEEN_CATEGORIES = frozenset(
    {"Airport", "Astronaut", "Building", "City", "ComicsCharacter", "Food", "Monument", "SportsTeam", "University", "WrittenWork"}
)


def linearise_triples(triples: Iterable[tuple[str, str, str]]) -> str:
    """``s1 : p1 : o1 | s2 : p2 : o2 ...``: the context string of a triple set."""
    return " | ".join(f"{subj} : {prop} : {obj}" for subj, prop, obj in triples)


def read_e2e(path: str | os.PathLike) -> list[Record]:
    """E2E ``MR||reference`` lines (blank lines are skipped) -> records, in file order."""
    records = []
    for lineno, line in enumerate(text_lines(path, "raw E2E file"), 1):
        text = line.strip()
        if not text:
            continue
        context, sep, completion = text.partition("||")
        if not sep:
            fail(f"{path}:{lineno}: no '||' between the meaning representation and the reference")
        if not context.strip():
            fail(f"{path}:{lineno}: empty meaning representation before '||'")
        if not completion.strip():
            fail(f"{path}:{lineno}: empty reference after '||'")
        records.append({"context": context, "completion": completion})
    return records


def _field(obj: object, key: str, where: str) -> object:
    if not isinstance(obj, dict) or key not in obj:
        fail(f"{where}: missing key {key!r}")
    return obj[key]


def read_webnlg(path: str | os.PathLike) -> list[Record]:
    """WebNLG 2017 json (``{"entries": [{"<n>": {...}}, ...]}``) -> one record per 'good' lexicalisation."""
    entries = _field(read_json(path, "raw WebNLG file"), "entries", str(path))
    records, empty = [], 0
    for index, wrapper in enumerate(entries, 1):
        where = f"{path}: entry {index}"
        if not isinstance(wrapper, dict) or len(wrapper) != 1:
            fail(f"{where}: expected an object with one key (the entry number)")
        entry = next(iter(wrapper.values()))
        triples = _field(entry, "modifiedtripleset", where)
        context = linearise_triples(
            (_field(t, "subject", where), _field(t, "property", where), _field(t, "object", where)) for t in triples
        )
        seen = _field(entry, "category", where) in WEBNLG_SEEN_CATEGORIES
        for lex in _field(entry, "lexicalisations", where):
            if _field(lex, "comment", where) != "good":
                continue
            text = _field(lex, "lex", where)
            if not isinstance(text, str):
                fail(f"{where}: 'lex' must be a string")
            if not text.strip():
                empty += 1
                continue
            records.append({"context": context, "completion": text, "cate": seen})
    if empty:
        _log.warning("%s: skipped %d empty lexicalisations", path, empty)
    return records


def read_dart(path: str | os.PathLike) -> list[Record]:
    """DART json (a list of ``{"tripleset": [[s, p, o], ...], "annotations": [{"text": ...}]}``) -> records."""
    examples = read_json(path, "raw DART file")
    if not isinstance(examples, list):
        fail(f"{path}: expected a JSON list of examples")
    records, empty = [], 0
    for index, example in enumerate(examples, 1):
        where = f"{path}: example {index}"
        triples = _field(example, "tripleset", where)
        if any(not isinstance(t, list) or len(t) != 3 or not all(isinstance(x, str) for x in t) for t in triples):
            fail(f"{where}: every triple must be [subject, property, object] strings")
        context = linearise_triples((subj, prop.lower(), obj) for subj, prop, obj in triples)
        for annotation in _field(example, "annotations", where):
            text = _field(annotation, "text", where)
            if not isinstance(text, str):
                fail(f"{where}: 'text' must be a string")
            if not text.strip():
                empty += 1
                continue
            records.append({"context": context, "completion": text})
    if empty:
        _log.warning("%s: skipped %d empty annotations", path, empty)
    return records


READERS: dict[str, Callable[[str | os.PathLike], list[Record]]] = {
    "e2e": read_e2e,
    "webnlg": read_webnlg,
    "dart": read_dart,
}


def write_formatted(records: list[Record], path: str | os.PathLike) -> None:
    """Write records as jsonl (``json.dumps`` defaults, as the original scripts), atomically."""
    with atomic_open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def read_formatted(path: str | os.PathLike) -> list[Record]:
    """Read a formatted jsonl file, stopping at the first malformed line with its number."""
    records = []
    for lineno, line in enumerate(text_lines(path, "formatted jsonl"), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            fail(f"{path}:{lineno}: not valid JSON ({exc.msg})")
        where = f"{path}:{lineno}"
        for key in ("context", "completion"):
            if not isinstance(_field(record, key, where), str):
                fail(f"{where}: {key!r} must be a string")
        if not record["completion"].strip():
            fail(f"{where}: empty completion")
        records.append(record)
    return records


def convert(kind: str, src: str | os.PathLike, dst: str | os.PathLike) -> tuple[int, int]:
    """Raw file ``src`` of data set ``kind`` -> formatted jsonl ``dst``; return (records, unique contexts)."""
    if not Path(src).is_file():
        fail(f"raw file {src} not found: run `bash create_datasets.sh` (or set NOLA_DATA_MIRROR)")
    check_writable(dst, "output")
    records = READERS[kind](src)
    if not records:
        fail(f"{src}: no examples found")
    write_formatted(records, dst)
    return len(records), len({r["context"] for r in records})
