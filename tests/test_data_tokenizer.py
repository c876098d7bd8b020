"""The fast GPT-2 tokenizer gives the slow reference BPE's ids, and files are encoded as the paper's."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nola.errors import UsageError
from nola.train.formats import read_e2e
from nola.gpt2.tokenizer import EOS_ID, encode_records, encode_texts, load_reference_tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def vocab(mirror):
    return mirror / "vocab"


@pytest.fixture(scope="module")
def fast(vocab):
    return load_tokenizer(vocab)


@pytest.fixture(scope="module")
def slow(vocab):
    return load_reference_tokenizer(vocab)


def test_fast_equals_slow_reference_on_every_e2e_valid_line(mirror, fast, slow):
    records = read_e2e(mirror / "data/e2e/valid.txt")
    texts = [r["context"] for r in records] + [" " + r["completion"] for r in records]
    assert len(texts) == 2 * 4672
    fast_ids = encode_texts(fast, texts)
    for text, ids in zip(texts, fast_ids):
        assert ids == slow.encode(text, add_special_tokens=False), text


@pytest.mark.parametrize("text", [
    " a <|endoftext|> b",           # the original encoder treats it as plain text
    "x  [STOP] [UNK]\n\n y\t",       # runs of spaces, newlines, bracketed words
    " héllo 😀 wörld – naïve café",   # multi-byte characters
    "I'm 12,000 don't they'll",      # contractions and digits
])
def test_fast_equals_slow_on_edge_cases(fast, slow, text):
    ids = encode_texts(fast, [text])[0]
    assert ids == slow.encode(text, add_special_tokens=False)
    assert fast.decode(ids) == text  # decoding keeps every space


def test_known_ids(fast):
    assert encode_texts(fast, ["Hello world", " Hello world"]) == [[15496, 995], [18435, 995]]
    assert fast.decode([EOS_ID]) == "<|endoftext|>"
    assert len(fast) == 50257


def test_encode_records_adds_the_separators(fast, slow):
    record = {"context": "name : The Eagle | food : Thai", "completion": "The Eagle serves Thai food ."}
    encoded = encode_records(fast, [record])[0]
    assert encoded["context"] == slow.encode(record["context"], add_special_tokens=False) + [EOS_ID]
    assert encoded["completion"] == slow.encode(" " + record["completion"], add_special_tokens=False) + [EOS_ID]
    bare = encode_records(fast, [record], add_bos=False, add_eos=False)[0]
    assert bare == {"context": encoded["context"][:-1], "completion": encoded["completion"][:-1]}


def test_missing_vocab_names_folder_and_fix(tmp_path):
    with pytest.raises(UsageError) as info:
        load_tokenizer(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "encoder.json and vocab.bpe" in message
    assert "create_datasets.sh" in message and "NOLA_DATA_MIRROR" in message


def test_gpt2_encode_cli(repo, vocab, fast, tmp_path):
    rows = [{"context": "a : b", "completion": "A b ."}, {"context": "a : b", "completion": "B a ."},
            {"context": "c : d", "completion": "C d .", "cate": False}]
    src = tmp_path / "valid_formatted.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dst = tmp_path / "valid.jsonl"
    proc = subprocess.run(
        [sys.executable, str(repo / "src/gpt2_encode.py"), "--vocab", str(vocab), "--input", str(src),
         "--output", str(dst), "--add_bos", "--add_eos"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    lines = dst.read_text().splitlines()
    assert len(lines) == 3
    expected = {"context": encode_texts(fast, ["c : d"])[0] + [EOS_ID], "completion": encode_texts(fast, [" C d ."])[0] + [EOS_ID]}
    assert json.loads(lines[2]) == expected
    assert lines[2] == json.dumps(expected)  # byte format of the original script
    total = sum(len(json.loads(x)["context"]) + len(json.loads(x)["completion"]) for x in lines)
    assert proc.stdout.strip() == f"{dst}: 3 examples, 2 unique contexts, {total} tokens"
