"""nola.train.textio, the one text reader: the lines every reader sees are exactly what iterating
``open(path, encoding="utf-8")`` gave before (so data files and scores are unchanged), and a
non-UTF-8 byte is reported with its file, line and byte offset."""
from __future__ import annotations

import json

import pytest

from nola.errors import UsageError
from nola.train.textio import read_json, text_lines


def test_text_lines_equal_open_iteration_on_every_line_break(tmp_path, mirror):
    odd = tmp_path / "odd.txt"
    odd.write_bytes("a\r\nb\rc\nd\x1ce\u2028f\x85g\n\n\ufeffh\tI||j é\nlast".encode())
    for path in (odd, mirror / "data" / "e2e" / "valid.txt"):
        with open(path, encoding="utf-8") as handle:
            assert text_lines(path, "file") == list(handle)


def test_read_json_equals_json_load(mirror):
    path = mirror / "data" / "webnlg_challenge_2017" / "dev.json"
    with open(path, encoding="utf-8") as handle:
        assert read_json(path, "file") == json.load(handle)


def test_non_utf8_names_file_line_and_byte_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\nstill ok\nna\xefve\n")
    with pytest.raises(UsageError, match=r"raw file .*bad.txt is not UTF-8 \(byte 0xef on line 3, byte offset 14\)"):
        text_lines(bad, "raw file")
