"""The scorer scripts: bad input gives one ``error:`` line naming the problem and exit status 2
(every case fails while reading the inputs, before any JVM starts); eval.py end to end on a
slice of the WebNLG fixture without METEOR; download_evalscript.sh on local repositories.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nola.metrics import webnlg

REPO = Path(__file__).resolve().parents[1]
E2E = REPO / "eval" / "e2e" / "measure_scores.py"
WEBNLG = REPO / "eval" / "eval.py"


def _run(script: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=cwd or REPO)


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""


@pytest.fixture()
def e2e_files(tmp_path: Path) -> tuple[Path, Path]:
    ref = tmp_path / "ref.txt"
    ref.write_text("a b c .\na b d .\n\ne f g .\n\n", encoding="utf-8")
    pred = tmp_path / "pred.txt"
    pred.write_text("a b c .\ne f .\n", encoding="utf-8")
    return ref, pred


def test_e2e_missing_file(e2e_files, tmp_path: Path) -> None:
    ref, _ = e2e_files
    _assert_one_line_error(_run(E2E, str(ref), str(tmp_path / "nope.txt"), "-p"), "nope.txt", "does not exist")


def test_e2e_empty_prediction_file(e2e_files, tmp_path: Path) -> None:
    ref, _ = e2e_files
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    _assert_one_line_error(_run(E2E, str(ref), str(empty), "-p"), "empty.txt", "is empty")


def test_e2e_count_mismatch(e2e_files, tmp_path: Path) -> None:
    ref, _ = e2e_files
    pred = tmp_path / "three.txt"
    pred.write_text("x\ny\nz\n", encoding="utf-8")
    _assert_one_line_error(_run(E2E, str(ref), str(pred), "-p"), "2 reference groups", "3 outputs")


def test_e2e_non_utf8(e2e_files, tmp_path: Path) -> None:
    ref, _ = e2e_files
    pred = tmp_path / "latin1.txt"
    pred.write_bytes("caf\u00e9 .\nok .\n".encode("latin-1"))
    _assert_one_line_error(_run(E2E, str(ref), str(pred), "-p"), "latin1.txt", "not UTF-8", "0xe9", "line 1")


def test_e2e_double_blank_line(tmp_path: Path) -> None:
    ref = tmp_path / "ref.txt"
    ref.write_text("a\n\n\nb\n", encoding="utf-8")
    pred = tmp_path / "pred.txt"
    pred.write_text("a\nb\n", encoding="utf-8")
    _assert_one_line_error(_run(E2E, str(ref), str(pred)), "empty reference group at line 3")


def test_e2e_help_names_metric_origins() -> None:
    proc = _run(E2E, "--help")
    assert proc.returncode == 0
    for needle in ("pymteval", "mteval-v13a", "METEOR 1.5", "pycocoevalcap", "CIDEr-D", "ROUGE-L"):
        assert needle in proc.stdout


@pytest.fixture()
def webnlg_files(tmp_path: Path) -> tuple[str, Path]:
    for i in range(2):
        (tmp_path / f"reference{i}").write_text("a b c .\nd e .\n", encoding="utf-8")
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("a b c .\nd .\n", encoding="utf-8")
    return str(tmp_path / "reference"), hyp


def test_webnlg_bad_inputs(webnlg_files, tmp_path: Path) -> None:
    prefix, hyp = webnlg_files
    _assert_one_line_error(_run(WEBNLG, "-R", prefix, "-H", str(hyp), "-nr", "3"), "reference2", "does not exist")
    short = tmp_path / "short.txt"
    short.write_text("a b c .\n", encoding="utf-8")
    _assert_one_line_error(_run(WEBNLG, "-R", prefix, "-H", str(short), "-nr", "2"), "2 lines", "has 1")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    _assert_one_line_error(_run(WEBNLG, "-R", prefix, "-H", str(empty), "-nr", "2"), "is empty")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe\n")
    _assert_one_line_error(_run(WEBNLG, "-R", prefix, "-H", str(bad), "-nr", "2"), "not UTF-8", "line 2")
    _assert_one_line_error(_run(WEBNLG, "-R", prefix, "-H", str(hyp), "-nr", "2", "-m", "bleu,chrf++"), "chrf++")


def test_webnlg_cli_without_meteor_matches_library(mirror: Path, tmp_path: Path) -> None:
    """eval.py -m bleu,ter on 40 fixture items (final newlines kept) equals the library's numbers."""
    src = mirror / "eval_golden" / "webnlg"
    n = 40
    for i in range(6):
        lines = (src / "references" / f"reference{i}").read_text(encoding="utf-8").splitlines()[:n]
        (tmp_path / f"reference{i}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("\n".join((src / "pred_template.txt").read_text(encoding="utf-8").splitlines()[:n]) + "\n",
                   encoding="utf-8")
    proc = _run(WEBNLG, "-R", str(tmp_path / "reference"), "-H", str(hyp), "-nr", "6", "-m", "bleu,ter", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    refs, hyps = webnlg.load(str(tmp_path / "reference"), hyp, 6)
    assert len(hyps) == n
    expected = webnlg.score(refs, hyps, ("bleu", "ter"))
    assert out["scores"]["BLEU_unrounded"] == expected["BLEU"]
    assert out["scores"]["BLEU"] == float(f"{expected['BLEU']:.2f}")
    assert out["scores"]["TER"] == expected["TER"]
    assert out["multi_bleu_line"] == expected["BLEU_line"]
    assert "METEOR" not in out["scores"]
    table = _run(WEBNLG, "-R", str(tmp_path / "reference"), "-H", str(hyp), "-nr", "6", "-m", "ter")
    assert table.returncode == 0 and table.stdout.split("\n")[0].split() == ["TER"]
    assert float(table.stdout.split("\n")[2]) == round(expected["TER"], 2)


def _git_repo(path: Path, files: dict[str, str]) -> str:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text, encoding="utf-8")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "fixture"]):
        subprocess.run(git + cmd, cwd=path, check=True, capture_output=True)
    return str(path)


def test_download_evalscript_clones_and_installs(tmp_path: Path) -> None:
    """download_evalscript.sh on local stand-ins for the two upstream repositories."""
    e2e_url = _git_repo(tmp_path / "e2e_src", {"requirements.txt": "future\n"})
    gen_url = _git_repo(tmp_path / "gen_src", {"install_dependencies.sh": "touch installed.marker\n"})
    dest = tmp_path / "official"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PIP": "echo pip", "EVAL_OFFICIAL_DIR": str(dest),
           "E2E_METRICS_URL": e2e_url, "GENERATION_EVAL_URL": gen_url}
    script = REPO / "eval" / "download_evalscript.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "e2e-metrics" / "requirements.txt").read_text() == "future\n"
    assert (dest / "GenerationEval" / "installed.marker").exists()
    assert "pip install -r e2e-metrics/requirements.txt" in proc.stdout
    again = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr  # a second run reuses the clones
