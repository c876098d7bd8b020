"""E2E, WebNLG and DART formatted and encoded files are microsoft/LoRA's, byte for byte and in its
record order. The expected bytes are rebuilt here from the raw mirror files the way that
repository's ``format_converting_{e2e,webnlg,dart}.py`` and ``gpt2_encode.py --add_bos --add_eos``
write them: E2E line by line split at ``||``; WebNLG/DART entry by entry, each entry's kept
references in turn (WebNLG: ``comment == "good"`` only), context ``s : p : o`` joined by `` | ``
(DART properties lower-cased); ``json.dumps`` per line."""
from __future__ import annotations

import json

import pytest

from nola.train.formats import convert
from nola.gpt2.tokenizer import encode_file, load_tokenizer

EOS = 50256
SEEN = {"Airport", "Astronaut", "Building", "City", "ComicsCharacter", "Food", "Monument", "SportsTeam",
        "University", "WrittenWork"}


def _e2e_lines(path) -> list[str]:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        parts = line.strip().split("||")
        lines.append(json.dumps({"context": parts[0], "completion": parts[1].strip("\n")}) + "\n")
    return lines


def _webnlg_lines(path) -> list[str]:
    raw, lines = json.loads(path.read_text(encoding="utf-8")), []
    for number, wrapper in enumerate(raw["entries"], 1):
        entry = wrapper[str(number)]
        context = " | ".join("{} : {} : {}".format(t["subject"], t["property"], t["object"])
                             for t in entry["modifiedtripleset"])
        for lex in entry["lexicalisations"]:
            if lex["comment"] == "good":
                lines.append(json.dumps({"context": context, "completion": lex["lex"],
                                         "cate": entry["category"] in SEEN}) + "\n")
    return lines


def _dart_lines(path) -> list[str]:
    raw, lines = json.loads(path.read_text(encoding="utf-8")), []
    for example in raw:
        context = " | ".join("{} : {} : {}".format(s, p.lower(), o) for s, p, o in example["tripleset"])
        lines += [json.dumps({"context": context, "completion": a["text"]}) + "\n" for a in example["annotations"]]
    return lines


@pytest.mark.parametrize("kind, raw_file, builder, records, moved", [
    ("e2e", "data/e2e/test.txt", _e2e_lines, 4693, 0),
    ("webnlg", "data/webnlg_challenge_2017/dev.json", _webnlg_lines, 2258, 182),
    ("dart", "data/dart/dart-v1.1.1-full-dev.json", _dart_lines, 6980, 2425),
])
def test_formatted_and_encoded_files_are_the_original_converters(mirror, tmp_path, kind, raw_file, builder,
                                                                   records, moved):
    expected = builder(mirror / raw_file)
    formatted, encoded = tmp_path / "valid_formatted.jsonl", tmp_path / "valid.jsonl"
    convert(kind, mirror / raw_file, formatted)
    assert formatted.read_text(encoding="utf-8") == "".join(expected)
    assert len(expected) == records
    # Lines that grouping repeated contexts together (the earlier behaviour) changed.
    contexts = [json.loads(line)["context"] for line in expected]
    first = {c: i for i, c in reversed(list(enumerate(contexts)))}
    grouped = sorted(range(len(contexts)), key=lambda i: first[contexts[i]])
    assert sum(expected[i] != expected[j] for i, j in enumerate(grouped)) == moved

    encode_file(formatted, encoded, mirror / "vocab")
    tokenizer = load_tokenizer(mirror / "vocab")
    items = [json.loads(line) for line in expected]
    ids = tokenizer([r["context"] for r in items] + [" " + r["completion"] for r in items],
                    add_special_tokens=False)["input_ids"]
    want = [json.dumps({"context": ids[i] + [EOS], "completion": ids[len(items) + i] + [EOS]}) + "\n"
            for i in range(len(items))]
    assert encoded.read_text(encoding="utf-8") == "".join(want)
