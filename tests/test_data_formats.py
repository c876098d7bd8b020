"""Raw E2E / WebNLG / DART -> formatted records: counts, linearisation, record order, bad input.

The exact bytes and order of the WebNLG and DART files against microsoft/LoRA's converters are
pinned in test_data_original_order.py."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nola.errors import UsageError
from nola.train.formats import convert, read_dart, read_e2e, read_formatted, read_webnlg


def _unique(records):
    return len({r["context"] for r in records})


def _runs_are_grouped(records) -> bool:
    """Every context occupies one consecutive run of lines."""
    finished, previous = set(), None
    for record in records:
        context = record["context"]
        if context != previous:
            if context in finished:
                return False
            if previous is not None:
                finished.add(previous)
            previous = context
    return True


@pytest.mark.parametrize("split, lines, mrs", [("valid", 4672, 547), ("test", 4693, 630)])
def test_e2e_counts(mirror, tmp_path, split, lines, mrs):
    out = tmp_path / f"{split}_formatted.jsonl"
    assert convert("e2e", mirror / f"data/e2e/{split}.txt", out) == (lines, mrs)
    records = read_formatted(out)
    assert len(records) == lines and _unique(records) == mrs
    assert _runs_are_grouped(records)
    assert records == read_e2e(mirror / f"data/e2e/{split}.txt")  # E2E is already grouped: order kept


def test_e2e_first_line_is_split_at_the_bars(mirror):
    first = read_e2e(mirror / "data/e2e/valid.txt")[0]
    assert first == {
        "context": "name : Alimentum | area : city centre | family friendly : no",
        "completion": "There is a place in the city centre , Alimentum , that is not family - friendly .",
    }


def test_webnlg_dev(mirror):
    records = read_webnlg(mirror / "data/webnlg_challenge_2017/dev.json")
    # 2268 lexicalisations, 10 of them marked 'toFix' and left out; 870 distinct triple sets.
    assert len(records) == 2258 and _unique(records) == 870
    # One triple set recurs in a later entry: kept there, in the raw file's order, as the original's
    # converter writes it (it used to be moved next to its first occurrence).
    assert not _runs_are_grouped(records)
    assert records[0] == {"context": "Aarhus : leaderName : Jacob_Bundsgaard", "completion": "The leader of Aarhus is Jacob Bundsgaard.", "cate": True}
    assert all(r["cate"] is True for r in records)  # dev holds only the 10 seen categories


def test_webnlg_linearisation_filter_and_unseen_category(tmp_path):
    raw = {"entries": [
        {"1": {"category": "Athlete", "modifiedtripleset": [
            {"subject": "A_B", "property": "club", "object": "C"},
            {"subject": "A_B", "property": "birthPlace", "object": "D,_E"}],
            "lexicalisations": [{"comment": "good", "lex": "A B plays for C."}, {"comment": "toFix", "lex": "bad"}]}},
        {"2": {"category": "Airport", "modifiedtripleset": [{"subject": "X", "property": "p", "object": "Y"}],
               "lexicalisations": [{"comment": "good", "lex": "X p Y."}]}},
    ]}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(raw))
    assert read_webnlg(path) == [
        {"context": "A_B : club : C | A_B : birthPlace : D,_E", "completion": "A B plays for C.", "cate": False},
        {"context": "X : p : Y", "completion": "X p Y.", "cate": True},
    ]


def test_dart_dev(mirror):
    records = read_dart(mirror / "data/dart/dart-v1.1.1-full-dev.json")
    assert len(records) == 6980 and _unique(records) == 2721
    assert not _runs_are_grouped(records)  # 40 runs of lines recur later; kept in the raw order, as the original
    assert records[0] == {
        "context": "Mars Hill College : joined : 1973 | Mars Hill College : location : Mars Hill, North Carolina",
        "completion": "A school from Mars Hill, North Carolina, joined in 1973.",
    }


@pytest.mark.parametrize("lines, message", [
    (["a : b||ok", "", "c : d no bars"], ":3: no '||'"),
    (["a : b||ok", "c : d||   "], ":2: empty reference"),
    (["||text"], ":1: empty meaning representation"),
])
def test_e2e_bad_lines_stop_with_file_and_line(tmp_path, lines, message):
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=str(path).replace(".", r"\.") + message):
        read_e2e(path)


@pytest.mark.parametrize("text, message", [
    ('{"context": "a", "completion": "b"}\n{"context": "a", \n', ":2: not valid JSON"),
    ('{"context": "a"}\n', ":1: missing key 'completion'"),
    ('{"context": "a", "completion": " "}\n', ":1: empty completion"),
    ('[1, 2]\n', ":1: missing key 'context'"),
    ('{"context": 3, "completion": "b"}\n', ":1: 'context' must be a string"),
])
def test_formatted_bad_lines_stop_with_file_and_line(tmp_path, text, message):
    path = tmp_path / "x_formatted.jsonl"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        read_formatted(path)


def test_json_sources_report_position(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text('{"entries": [\n  {"1": {"category": "Airport",,}}\n]}')
    with pytest.raises(UsageError, match=r"dev\.json:2: not valid JSON"):
        read_webnlg(path)
    path.write_text(json.dumps([{"tripleset": [["a", "B", "c"]]}]))
    with pytest.raises(UsageError, match="example 1: missing key 'annotations'"):
        read_dart(path)


def test_converter_cli_reports_bad_input_in_one_line(repo, tmp_path):
    bad = tmp_path / "train.txt"
    bad.write_text("name : A||A is here .\nname : B A is there .\n")
    proc = subprocess.run(
        [sys.executable, str(repo / "src/format_converting_e2e.py"), str(bad), str(tmp_path / "out.jsonl")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}:2: no '||' between the meaning representation and the reference"
    assert not (tmp_path / "out.jsonl").exists()
