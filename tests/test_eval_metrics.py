"""Scorer building blocks against hand-computed values and a brute-force TER (no Java needed)."""
from __future__ import annotations

import math
import random

import pytest

from nola.metrics import e2e, webnlg
from nola.metrics.mteval import e2e_bleu_nist, mteval_tokenize, multi_bleu_detok
from nola.metrics.ter import ter


# ---------------------------------------------------------------- mteval-v13a tokenisation

@pytest.mark.parametrize("text, tokens", [
    ("Hello, world.", "Hello , world ."),
    ("It costs £20,000.50 - isn't it?", "It costs £20,000.50 - isn't it ?"),
    ("pages 10-12 (A&amp;B)", "pages 10 - 12 ( A & B )"),
    ("a.b 3.5 x,y", "a . b 3.5 x , y"),
    ("  spaced\tout  ", "spaced out"),
    ("", ""),
])
def test_mteval_tokenize(text: str, tokens: str) -> None:
    assert mteval_tokenize(text) == tokens


# ---------------------------------------------------------------- E2E BLEU / NIST (pymteval)

def test_identical_hypothesis_bleu_one_and_hand_nist() -> None:
    sent = "the cat sat on the mat"
    bleu, nist = e2e_bleu_nist([sent], [[sent]])
    assert bleu == 1.0
    # unigram info log2(6/count): 'the' twice (2*log2 3), four words once (4*log2 6), over 6 words;
    # bigram info log2(count(first word)/count(bigram)): 'the cat', 'the mat' 1 bit each, over 5;
    # longer n-grams carry 0 bits (their prefixes are as rare as they are).
    expected = (2 * math.log2(3) + 4 * math.log2(6)) / 6 + 2 / 5
    assert nist == pytest.approx(expected, rel=1e-12)


def test_bleu_is_case_insensitive_and_brevity_penalised() -> None:
    bleu, _ = e2e_bleu_nist(["The Cat sat on the"], [["the cat sat on the mat"]])
    # 5 of 6 reference words: all 5/4/3/2 n-grams hit; BP = exp(1 - 6/5)
    assert bleu == pytest.approx(math.exp(1 - 6 / 5), rel=1e-12)


def test_empty_hypothesis() -> None:
    bleu, nist = e2e_bleu_nist([""], [["the cat sat"]])
    # pymteval: an empty text is one empty token; no hits, n-gram lengths 1, 0, -1, -2
    # floored at 1e-9, hits floored at 1e-15; BP = exp(1 - 3/1).
    expected = math.exp(-2) * math.exp((math.log(1e-15) + 3 * math.log(1e-15 / 1e-9)) / 4)
    assert bleu == pytest.approx(expected, rel=1e-9)
    assert nist == 0.0


def test_one_word_outputs() -> None:
    bleu, nist = e2e_bleu_nist(["yes", "no"], [["yes"], ["no"]])
    # unigrams 2/2; higher orders have no hits and lengths 0, -2, -4 (floored at 1e-9)
    assert bleu == pytest.approx(math.exp(3 * math.log(1e-15 / 1e-9) / 4), rel=1e-9)
    # each word carries log2(2 reference words / 1) = 1 bit: 2 bits over 2 words
    assert nist == pytest.approx(1.0, rel=1e-12)


def test_closest_reference_length_prefers_the_shorter() -> None:
    # 3 hypothesis words, references of 2 and 4 words: the 2-word one counts, so no brevity penalty
    bleu, _ = e2e_bleu_nist(["a b c"], [["a b", "a b c d"]])
    # no brevity penalty; 1-3-grams all hit; no 4-gram (length 0, floored): log(1e-15/1e-9) / 4
    assert bleu == pytest.approx(math.exp(math.log(1e-6) / 4), rel=1e-9)
    multi = multi_bleu_detok(["a b c"], [["a b", "a b c d"]])
    assert multi.ref_len == 2 and multi.brevity_penalty == 1.0


# ---------------------------------------------------------------- multi-bleu-detok

def test_multi_bleu_closed_form() -> None:
    multi = multi_bleu_detok(["the cat sat on the mat today"], [["the cat sat on the mat"]])
    assert multi.bleu == pytest.approx(100 * (6 / 7 * 5 / 6 * 4 / 5 * 3 / 4) ** 0.25, rel=1e-12)
    assert multi.line == "BLEU = 80.91, 85.7/83.3/80.0/75.0 (BP=1.000, ratio=1.167, hyp_len=7, ref_len=6)"


def test_multi_bleu_identical_case_sensitive_and_zero_order() -> None:
    assert multi_bleu_detok(["A b c d."], [["A b c d."]]).bleu == pytest.approx(100.0)
    assert multi_bleu_detok(["a b c d."], [["A b c d."]]).bleu < 100.0
    multi = multi_bleu_detok(["the cat sat on the mat"], [["the cat is on the mat"]])
    assert multi.line == "BLEU = 0.00, 83.3/60.0/25.0/0.0 (BP=1.000, ratio=1.000, hyp_len=6, ref_len=6)"


def test_multi_bleu_brevity_penalty() -> None:
    multi = multi_bleu_detok(["a b c d"], [["a b c d e f g h"]])
    assert multi.brevity_penalty == pytest.approx(math.exp(1 - 8 / 4))
    assert multi.bleu == pytest.approx(100 * math.exp(-1))


# ---------------------------------------------------------------- TER

def _pyter_reference(hyp: list[str], ref: list[str]) -> float:
    """pyter3's TER written out plainly: full Levenshtein per candidate, sort()[-1] selection."""
    def lev(a: list[str]) -> int:
        prev = list(range(len(ref) + 1))
        for i, word in enumerate(a, start=1):
            cur = [i]
            for j, other in enumerate(ref, start=1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (word != other)))
            prev = cur
        return prev[-1]

    shifts = 0
    while True:
        base = lev(hyp)
        scored = []
        for i in range(len(hyp)):
            for j in range(len(ref)):
                if i == j or hyp[i] != ref[j]:
                    continue
                n = 1
                while i + n < len(hyp) and j + n < len(ref) and hyp[i + n] == ref[j + n]:
                    n += 1
                moved = hyp[:i] + hyp[i + n:]
                moved[j:j] = hyp[i:i + n]
                scored.append((base - lev(moved), moved))
        if not scored:
            break
        scored.sort()
        gain, best = scored[-1]
        if gain <= 0:
            break
        shifts += 1
        hyp = best
    return (shifts + lev(hyp)) / len(ref)


def test_ter_pyter_documented_example() -> None:
    ref = "SAUDI ARABIA denied THIS WEEK information published in the AMERICAN new york times".split()
    hyp = "THIS WEEK THE SAUDIS denied information published in the new york times".split()
    assert f"{ter(hyp, ref):.3f}" == "0.308"  # pyter's README / doctest
    assert ter(hyp, ref) == _pyter_reference(hyp, ref)


def test_ter_edge_cases() -> None:
    assert ter([], ["a", "b"]) == 1.0
    assert ter(["a", "b"], ["a", "b"]) == 0.0
    assert ter(["b", "a"], ["a", "b"]) == 0.5  # one shift
    with pytest.raises(ZeroDivisionError):
        ter(["a"], [])


def test_ter_matches_brute_force_on_random_sentences() -> None:
    rng = random.Random(0)
    words = "a b c d e".split()  # a small vocabulary: many repeats, shifts and ties
    for _ in range(300):
        hyp = [rng.choice(words) for _ in range(rng.randint(0, 9))]
        ref = [rng.choice(words) for _ in range(rng.randint(1, 9))]
        assert ter(hyp, ref) == _pyter_reference(list(hyp), ref), (hyp, ref)


def test_item_ter_empty_reference_counts_one() -> None:
    assert webnlg._item_ter("a b", ["", "a c"]) == 0.5
    assert webnlg._item_ter("a b", ["", "  "]) == 1.0


def test_word_tokenize_treebank_rules() -> None:
    assert webnlg.word_tokenize('he said "hi" , isn\'t it ?') == "he said `` hi '' , is n't it ?"


# ---------------------------------------------------------------- E2E input forms and output

def test_e2e_reference_forms_agree(tmp_path) -> None:
    text = tmp_path / "ref.txt"
    text.write_text("A one .\n  A two .  \n\nB one .\n\n", encoding="utf-8")
    tsv = tmp_path / "ref.tsv"
    tsv.write_text("mr\tref\nname[A]\tA one .\nname[A]\tA two .\nname[B]\tB one .\n", encoding="utf-8")
    csv = tmp_path / "ref.csv"
    csv.write_text('mr,ref\n"name[A], food[X]","A one ."\n"name[A], food[X]",A two .\n'
                   '"name[B]","B one ."\n', encoding="utf-8")
    expected = [["A one .", "A two ."], ["B one ."]]
    assert e2e.read_references(text) == expected
    assert e2e.read_references(tsv) == expected
    assert e2e.read_references(csv) == expected
    single = tmp_path / "single.txt"
    single.write_text("x\ny\n", encoding="utf-8")
    assert e2e.read_references(single) == [["x"], ["y"]]
    sys_csv = tmp_path / "sys.csv"
    sys_csv.write_text('"mr","output"\n"name[A]","Out A ."\n"name[B]","Out B ."\n', encoding="utf-8")
    assert e2e.read_outputs(sys_csv) == ["Out A .", "Out B ."]


def test_e2e_score_block_layout() -> None:
    scores = {"BLEU": 0.59209222, "NIST": 7.97595795, "METEOR": 0.43406159, "ROUGE_L": 0.64455195,
              "CIDEr": 2.22799144}
    assert e2e.format_scores(scores) == ("SCORES:\n==============\nBLEU: 0.5921\nNIST: 7.9760\n"
                                         "METEOR: 0.4341\nROUGE_L: 0.6446\nCIDEr: 2.2280\n")
