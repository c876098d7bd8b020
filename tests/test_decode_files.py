"""gpt2_decode.py: reference / prediction files in the layouts the scorers read.

The E2E and WebNLG reference files are checked byte for byte against the mirror's golden
fixtures (written by the paper's pipeline); predictions against hand-made token sequences.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from src import gpt2_decode
from nola.errors import UsageError
from nola.train.formats import convert, read_formatted
from nola.metrics import webnlg as webnlg_metrics
from nola.gpt2.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok(mirror):
    return load_tokenizer(mirror / "vocab")


@pytest.fixture(scope="module")
def webnlg_dev(tmp_path_factory, mirror):
    out = tmp_path_factory.mktemp("webnlg") / "dev_formatted.jsonl"
    convert("webnlg", mirror / "data" / "webnlg_challenge_2017" / "dev.json", out)
    return out


def write_samples(path, predictions):
    with open(path, "w") as handle:
        for i, pred in enumerate(predictions):
            handle.write(json.dumps({"id": i, "predict": pred}) + "\n")
    return path


def context_numbers(records):
    """For each line, the index of its context among the distinct contexts."""
    index = {}
    return [index.setdefault(r["context"], len(index)) for r in records]


def run(mirror, samples, formatted, ref, pred, *extra):
    gpt2_decode.main(["--vocab", str(mirror / "vocab"), "--sample_file", str(samples), "--input_file", str(formatted),
                      "--output_ref_file", str(ref), "--output_pred_file", str(pred), *extra])


def test_e2e_test_split_references_are_the_golden_file(tmp_path, mirror, e2e_data, tok):
    formatted = e2e_data / "test_formatted.jsonl"
    numbers = context_numbers(read_formatted(formatted))
    # prediction k, then the "\n\n" token 628 and a tail that must be cut off
    preds = [tok(f" Prediction {k}.")["input_ids"] + [628] + tok(" tail")["input_ids"] for k in numbers]
    samples = write_samples(tmp_path / "predict.jsonl", preds)
    run(mirror, samples, formatted, tmp_path / "ref.txt", tmp_path / "pred.txt")
    assert (tmp_path / "ref.txt").read_bytes() == (mirror / "eval_golden" / "e2e_test_ref.txt").read_bytes()
    assert (tmp_path / "pred.txt").read_text().splitlines() == [f"Prediction {k}." for k in range(630)]


def test_webnlg_references_are_the_golden_files_and_filters_split_them(tmp_path, mirror, webnlg_dev, tok):
    records = read_formatted(webnlg_dev)
    numbers = context_numbers(records)
    preds = [tok(f" Entry {k}: It's The End")["input_ids"] + [50256, 0, 0] for k in numbers]
    samples = write_samples(tmp_path / "predict.jsonl", preds)
    refs = tmp_path / "references"
    run(mirror, samples, webnlg_dev, refs, tmp_path / "pred.txt", "--ref_type", "webnlg", "--ref_num", "6",
        "--tokenize", "--lower")
    golden = mirror / "eval_golden" / "webnlg" / "references"
    for i in range(6):
        assert (refs / f"reference{i}").read_bytes() == (golden / f"reference{i}").read_bytes(), i
    assert (tmp_path / "pred.txt").read_text().splitlines() == [f"entry {k} : it ' s the end" for k in range(870)]
    refs_per_item, hyps = webnlg_metrics.load(str(refs / "reference"), tmp_path / "pred.txt", 6)  # the scorer's reader
    assert len(refs_per_item) == len(hyps) == 870

    # WebNLG dev holds only categories seen in training
    assert all(r["cate"] for r in records)
    run(mirror, samples, webnlg_dev, tmp_path / "seen", tmp_path / "seen.txt", "--ref_type", "webnlg", "--filter", "seen")
    assert (tmp_path / "seen.txt").read_text().splitlines() == [f"Entry {k}: It's The End" for k in range(870)]
    with pytest.raises(UsageError, match="--filter unseen leaves no contexts"):
        run(mirror, samples, webnlg_dev, tmp_path / "unseen", tmp_path / "unseen.txt", "--ref_type", "webnlg",
            "--filter", "unseen")


def test_filter_keeps_seen_or_unseen_contexts_in_order(tmp_path, mirror, tok):
    formatted = tmp_path / "webnlg_formatted.jsonl"
    rows = [("s1", True), ("s1", True), ("u1", False), ("s2", True), ("u2", False), ("u2", False)]
    formatted.write_text("".join(json.dumps({"context": c, "completion": f"ref {i}", "cate": seen}) + "\n"
                                 for i, (c, seen) in enumerate(rows)))
    samples = write_samples(tmp_path / "predict.jsonl", [tok(f" {c}")["input_ids"] for c, _ in rows])
    for name, contexts, refs in (("seen", ["s1", "s2"], ["ref 0\nref 3\n", "ref 1\nref 3\n"]),
                                 ("unseen", ["u1", "u2"], ["ref 2\nref 4\n", "ref 2\nref 5\n"])):
        run(mirror, samples, formatted, tmp_path / name, tmp_path / f"{name}.txt", "--ref_type", "webnlg",
            "--ref_num", "2", "--filter", name)
        assert (tmp_path / f"{name}.txt").read_text().split() == contexts
        assert [(tmp_path / name / f"reference{i}").read_text() for i in range(2)] == refs


def test_cutting_padding_and_dart_layout(tmp_path, mirror, tok):
    formatted = tmp_path / "dart_formatted.jsonl"
    lines = [("a : p : b", "First ref.<|endoftext|>junk"), ("a : p : b", "Second ref.\n\nmore"),
             ("a : p : b", "  Third ref.  "), ("c : q : d", "Only one.")]
    formatted.write_text("".join(json.dumps({"context": c, "completion": t}) + "\n" for c, t in lines))
    ids = lambda text: tok(text)["input_ids"]  # noqa: E731
    preds = [ids(" x"), ids(" y"), ids(" Kept text") + [50256] + ids(" after eos"), ids(" No EOS\nat\x0call  ")]
    samples = write_samples(tmp_path / "predict.jsonl", preds)
    run(mirror, samples, formatted, tmp_path / "refs", tmp_path / "pred.txt", "--ref_type", "dart", "--ref_num", "3")
    read = lambda name: (tmp_path / "refs" / name).read_text()  # noqa: E731
    assert [read(f"reference{i}") for i in range(3)] == [
        "First ref.\nOnly one.\n", "Second ref.\nOnly one.\n", "Third ref.\nOnly one.\n"]
    # duplicates of a context take the last line's prediction, as the original; line breaks
    # inside a prediction become spaces (one line per context)
    assert (tmp_path / "pred.txt").read_text() == "Kept text\nNo EOS at all\n"
    run(mirror, samples, formatted, tmp_path / "refs", tmp_path / "pred.txt", "--ref_type", "dart", "--ref_num", "4",
        "--ref_pad", "empty")
    assert read("reference3") == "\n\n" and read("reference1") == "Second ref.\n\n"


def test_sample_file_that_does_not_match_the_input_is_an_error(tmp_path, mirror, repo):
    formatted = tmp_path / "in.jsonl"
    formatted.write_text("".join(json.dumps({"context": f"c{i % 2}", "completion": "t"}) + "\n" for i in range(4)))
    cases = {
        "missing": ([{"id": i, "predict": [1]} for i in (0, 1, 3)], "no prediction for 1 of the 4 lines"),
        "extra": ([{"id": i, "predict": [1]} for i in range(5)], "id 4 is not a line of --input_file"),
        "twice": ([{"id": i, "predict": [1]} for i in (0, 1, 2, 3, 2)], "id 2 appears twice"),
        "shape": ([{"id": 0, "predict": "text"}], "expected"),
    }
    for name, (items, message) in cases.items():
        samples = tmp_path / f"{name}.jsonl"
        samples.write_text("".join(json.dumps(item) + "\n" for item in items))
        with pytest.raises(UsageError, match=message):
            run(mirror, samples, formatted, tmp_path / "r.txt", tmp_path / "p.txt")
    assert not (tmp_path / "r.txt").exists() and not (tmp_path / "p.txt").exists()
    # from the command line: one "error:" line, exit status 2
    done = subprocess.run([sys.executable, str(repo / "src" / "gpt2_decode.py"), "--vocab", str(mirror / "vocab"),
                           "--sample_file", str(tmp_path / "extra.jsonl"), "--input_file", str(formatted),
                           "--output_ref_file", str(tmp_path / "r.txt"), "--output_pred_file", str(tmp_path / "p.txt")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: --sample_file") and "Traceback" not in done.stderr
    with pytest.raises(UsageError, match="'cate'"):
        samples = write_samples(tmp_path / "ok.jsonl", [[1]] * 4)
        run(mirror, samples, formatted, tmp_path / "r.txt", tmp_path / "p.txt", "--filter", "seen")
