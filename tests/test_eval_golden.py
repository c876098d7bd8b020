"""The scorers against the official scorers' numbers in ``$NOLA_DATA_MIRROR/eval_golden``.

Java runs three times in all: one ``measure_scores.py`` process on the 630 E2E test groups (its
own PTB tokenizer and METEOR JVMs, timed), and one METEOR JVM shared by the in-process checks.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nola.metrics import e2e, webnlg
from nola.metrics.java import Meteor

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def meteor():
    with Meteor() as process:
        yield process


@pytest.fixture(scope="module")
def e2e_run(mirror: Path) -> tuple[dict, float]:
    gold = mirror / "eval_golden"
    start = time.time()
    proc = subprocess.run([sys.executable, str(REPO / "eval" / "e2e" / "measure_scores.py"),
                           str(gold / "e2e_test_ref.txt"), str(gold / "pred_template.txt"), "-p", "--json"],
                          capture_output=True, text=True, cwd=REPO)
    seconds = time.time() - start
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), seconds


@pytest.mark.parametrize("metric", e2e.METRICS)
def test_e2e_matches_official_to_4_decimals(e2e_run, mirror: Path, metric: str) -> None:
    golden = json.loads((mirror / "eval_golden" / "pred_template.scores.json").read_text())["scores"]
    ours = e2e_run[0]["scores"][metric]
    assert f"{ours:.4f}" == f"{golden[metric]:.4f}"
    assert ours == pytest.approx(golden[metric], abs=1e-9)


def test_e2e_scores_all_630_groups(e2e_run) -> None:
    out, _ = e2e_run  # how long it takes is measured by benchmarks, not asserted here
    assert out["outputs"] == 630


def test_webnlg_matches_official(mirror: Path, meteor: Meteor) -> None:
    gold = mirror / "eval_golden" / "webnlg"
    golden = json.loads((gold / "pred_template.scores.json").read_text())["scores"]
    # the files as written, final newline kept: here it just ends the last line
    refs, hyps = webnlg.load(str(gold / "references" / "reference"), gold / "pred_template.txt", 6)
    assert len(hyps) == 870
    result = webnlg.score(refs, hyps, meteor=meteor)
    assert f"{result['BLEU']:.2f}" == f"{golden['BLEU']:.2f}"
    assert result["BLEU_line"] == golden["multi_bleu_line"]
    assert result["BLEU_NLTK"] == pytest.approx(golden["BLEU_NLTK"], abs=1e-12)
    assert result["METEOR"] == pytest.approx(golden["METEOR"], abs=1e-12)
    assert result["TER"] == pytest.approx(golden["TER"], abs=1e-12)


def test_e2e_edge_corpora(meteor: Meteor) -> None:
    refs = [["There is a pub called Zizzi ."], ["Zizzi is cheap ."]]
    same = e2e.score(refs, ["There is a pub called Zizzi .", "Zizzi is cheap ."], meteor=meteor)
    assert same["BLEU"] == 1.0 and same["ROUGE_L"] == 1.0
    assert 0 < same["METEOR"] <= 1 and same["CIDEr"] >= 0

    empty = e2e.score(refs, ["", ""], meteor=meteor)
    assert empty["BLEU"] < 1e-8 and empty["NIST"] == 0.0
    assert empty["METEOR"] == 0.0 and empty["ROUGE_L"] == 0.0 and empty["CIDEr"] == 0.0

    one_word = e2e.score([["yes"], ["no"]], ["yes", "no"], meteor=meteor)
    assert one_word["BLEU"] == pytest.approx(math.exp(3 * math.log(1e-6) / 4))
    assert one_word["NIST"] == pytest.approx(1.0) and one_word["ROUGE_L"] == 1.0
    assert one_word["METEOR"] > 0
