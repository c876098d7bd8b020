"""scripts/paper/: the preflight stops early and cleanly (exit 2, one line, nothing written), and the
row scripts hand train/beam/decode/score the paper's flags."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "scripts" / "paper"
# The GPT-2 rows (the LLaMA-2 rows alpaca_llama2_*.sh and their llama_common.sh: tests/test_llama_scripts.py;
# the ViT rows vit_*.sh: tests/test_vit_scripts.py).
ROW_SCRIPTS = sorted(p for p in PAPER.glob("*.sh") if p.name != "common.sh"
                     and not p.name.startswith(("alpaca_llama2_", "llama_common", "vit_")))
DATA = {"e2e": "e2e", "webnlg": "webnlg_challenge_2017", "dart": "dart"}


def _write(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture()
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A checkout holding the real scripts/paper/ with placeholder pipeline scripts and scorers,
    and a run root with every file the preflight looks for (empty: nothing is ever run on them)."""
    repo, root = tmp_path / "repo", tmp_path / "root"
    shutil.copytree(PAPER, repo / "scripts" / "paper")
    for name in ("gpt2_ft.py", "gpt2_beam.py"):
        _write(repo / "src" / name)
    _write(repo / "src" / "gpt2_decode.py", "--filter\n")
    _write(repo / "eval" / "e2e" / "measure_scores.py")
    _write(repo / "eval" / "GenerationEval" / "eval.py")
    for model in ("gpt2-medium", "gpt2-large"):
        _write(root / "pretrained_checkpoints" / f"{model}-pytorch_model.bin")
    for folder in DATA.values():
        for split in ("train", "valid", "test", "test_formatted"):
            _write(root / "data" / folder / f"{split}.jsonl")
    _write(root / "vocab" / "encoder.json")
    _write(root / "vocab" / "vocab.bpe")
    return repo, root


def run(script: Path, *args: str, root: Path, gpus_hidden: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "NOLA_RUN_ROOT": str(root)}
    env.pop("NPROC", None)
    env.pop("WORK_ROOT", None)
    env.pop("RESULTS_DIR", None)
    if gpus_hidden:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=120)


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def assert_clean_failure(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and re.search(pattern, lines[0]), lines[0]


def test_no_gpu_stops_before_any_work(layout):
    repo, root = layout
    before = files_under(root) | files_under(repo)
    result = run(repo / "scripts" / "paper" / "e2e_gpt2m_nola_qv_96k.sh", root=root)
    assert_clean_failure(result, r"no CUDA GPU visible .*torch\.cuda\.device_count\(\) = 0")
    assert files_under(root) | files_under(repo) == before  # no work dir, no results file


@pytest.mark.parametrize("script, model", [("e2e_gpt2m_lora_r4.sh", "gpt2-medium"),
                                           ("e2e_gpt2l_qnola3.sh", "gpt2-large")])
def test_missing_checkpoint_names_the_download(layout, script, model):
    repo, root = layout
    (root / "pretrained_checkpoints" / f"{model}-pytorch_model.bin").unlink()
    before = files_under(root) | files_under(repo)
    result = run(repo / "scripts" / "paper" / script, root=root)
    assert_clean_failure(result, rf"{model}-pytorch_model\.bin is missing: run `bash download_pretrained_checkpoints\.sh {model}`")
    assert files_under(root) | files_under(repo) == before


def test_missing_data_names_create_datasets(layout):
    repo, root = layout
    (root / "data" / "dart" / "test_formatted.jsonl").unlink()
    result = run(repo / "scripts" / "paper" / "dart_gpt2m_nola.sh", root=root)
    assert_clean_failure(result, r"data/dart/test_formatted\.jsonl is missing: run `bash create_datasets\.sh`")


def test_real_checkout_fails_on_an_empty_root(tmp_path):
    """The committed scripts, run against a folder with no checkpoints: the first check stops them."""
    result = run(PAPER / "e2e_gpt2l_nola_qv_144k.sh", root=tmp_path)
    assert_clean_failure(result, r"download_pretrained_checkpoints\.sh gpt2-large")
    assert list(tmp_path.iterdir()) == []


def test_earlier_run_is_not_mixed_in(layout):
    repo, root = layout
    _write(root / "trained_models" / "e2e_gpt2m_lora_r1" / "model.1000" / "adapter_config.json")
    result = run(repo / "scripts" / "paper" / "e2e_gpt2m_lora_r1.sh", root=root)
    assert_clean_failure(result, r"trained_models/e2e_gpt2m_lora_r1 holds an earlier run: continue it with --resume")


def test_resume_continues_an_interrupted_run(layout):
    repo, root = layout
    script = repo / "scripts" / "paper" / "e2e_gpt2m_nola_qv_96k.sh"
    assert_clean_failure(run(script, "--dry-run", "--resume", root=root), r"resume\.pt is missing")
    work = root / "trained_models" / "e2e_gpt2m_nola_qv_96k"
    _write(work / "resume.pt")
    _write(work / "model.1000" / "adapter_config.json")
    result = run(script, "--dry-run", "--resume", root=root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith(f"--nola_num_basis 1000 --resume {work}")


@pytest.mark.parametrize("nproc, message", [("3", "does not divide the paper's batch of 8"),
                                            ("two", "is not a positive integer")])
def test_bad_nproc(layout, nproc, message):
    repo, root = layout
    result = run(repo / "scripts" / "paper" / "e2e_gpt2m_lora_r4.sh", "--dry-run", "--nproc_per_node", nproc, root=root)
    assert_clean_failure(result, message)


def _row_call(script: Path) -> tuple[list[str], list[str]]:
    """The run_row line of a row script: its positional arguments and its training flags."""
    text = script.read_text().replace("\\\n", " ")
    words = next(line for line in text.splitlines() if line.startswith("run_row ")).split()[1:]
    return words[:4], words[4:]


@pytest.mark.parametrize("script", ROW_SCRIPTS, ids=lambda p: p.stem)
def test_dry_run_commands(layout, script):
    repo, root = layout
    (name, card, model, dataset), flags = _row_call(script)
    assert name == script.stem
    result = run(repo / "scripts" / "paper" / script.name, "--dry-run", "--nproc_per_node=2", root=root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    train, beam = lines[0], lines[1]
    assert "-m torch.distributed.launch --nproc_per_node=2" in train and "src/gpt2_ft.py" in train
    assert train.endswith(" ".join(flags))  # the row's own flags come last, so they win
    data = f"data/{DATA[dataset]}"
    for expected in (f"--train_data {data}/train.jsonl", f"--valid_data {data}/valid.jsonl",
                     "--train_batch_size 4 --grad_acc 1", "--seq_len 512", f"--model_card {card}",
                     f"pretrained_checkpoints/{model}-pytorch_model.bin", "--warmup_step 500 --max_epoch 5",
                     f"--label_smooth {'0.0' if dataset == 'dart' else '0.1'}", "--random_seed 110",
                     f"trained_models/{name} "):
        assert expected in train, expected
    assert "src/gpt2_beam.py" in beam and f"--data {data}/test.jsonl" in beam
    assert "--beam 10 --length_penalty 0.8 --no_repeat_ngram_size 4" in beam and "--eos_token_id 628" in beam
    decodes = [line for line in lines if "gpt2_decode.py" in line]
    scores = [line for line in lines if "measure_scores.py" in line or "eval.py" in line]
    assert len(decodes) == len(scores) == {"e2e": 1, "dart": 1, "webnlg": 3}[dataset]
    if dataset == "e2e":
        assert scores[0].endswith("e2e_ref.txt " + str(root / "trained_models" / name / "e2e_pred.txt") + " -p --json")
    else:
        assert all(f"--ref_type {dataset} --ref_num 6 --tokenize --lower" in line for line in decodes)
        assert all("-nr 6 -m bleu,meteor,ter" in line for line in scores)
    if dataset == "webnlg":
        assert [("--filter seen" in d, "--filter unseen" in d) for d in decodes] == [(False, False), (True, False), (False, True)]
    assert not (root / "trained_models").exists()


def test_nola_budgets_match_their_names():
    """k = l per script: L layers x 2 projections x 2k coefficients = the budget in the name."""
    layers = {"gpt2.md": 24, "gpt2.lg": 36}
    for script in ROW_SCRIPTS:
        (name, card, _, _), flags = _row_call(script)
        match = re.search(r"_(\d+)k$", name)
        if "--nola_rank" not in flags or not match:
            continue
        k = int(flags[flags.index("--nola_num_basis") + 1])
        assert layers[card] * 2 * 2 * k == int(match.group(1)) * 1000, name


def test_every_row_script_is_a_published_row():
    published = json.loads((REPO / "results" / "published.json").read_text())
    assert {r["id"] for r in published["rows"] if r["dataset"] in DATA} == {p.stem for p in ROW_SCRIPTS}


def test_flags_are_accepted_by_the_pipeline_scripts(layout):
    """Every flag the row scripts pass exists in the real gpt2_ft.py (parsed with its own parser),
    gpt2_beam.py and gpt2_decode.py (listed by --help)."""
    from src.gpt2_ft import build_parser

    repo, root = layout
    commands: list[list[str]] = []
    for name in ("e2e_gpt2m_lora_r4", "e2e_gpt2l_qnola4", "e2e_gpt2m_nola_mlp_96k", "webnlg_gpt2m_nola",
                 "dart_gpt2m_lora_r4"):
        result = run(repo / "scripts" / "paper" / f"{name}.sh", "--dry-run", root=root)
        assert result.returncode == 0, result.stderr
        commands += [line.split() for line in result.stdout.splitlines() if not line.startswith("#")]
    used: dict[str, set[str]] = {"gpt2_beam.py": set(), "gpt2_decode.py": set()}
    for words in commands:
        script = next((w for w in words if w.endswith(("gpt2_ft.py", "gpt2_beam.py", "gpt2_decode.py"))), None)
        if script is None:
            continue
        flags = words[words.index(script) + 1:]
        if script.endswith("gpt2_ft.py"):
            args = build_parser().parse_args(flags)
            assert args.train_batch_size == 8 and args.max_epoch == 5 and args.scheduler == "linear"
        else:
            used[Path(script).name] |= {w for w in flags if w.startswith("--")}
    for name, flags in used.items():
        help_text = subprocess.run([sys.executable, str(REPO / "src" / name), "--help"], capture_output=True,
                                   text=True, timeout=120).stdout
        assert flags and flags <= set(re.findall(r"--[a-z0-9_]+", help_text)), name


@pytest.mark.slow
def test_row_end_to_end_on_cpu(tmp_path, mirror):
    """A whole row through the real gpt2_ft/beam/decode with a tiny random GPT-2 on 24 E2E lines,
    two processes (the GPU query answered by a stand-in, so NPROC defaults to its "2 GPUs"), a
    stand-in scorer that checks the decoded files; the row lands in results/e2e.jsonl."""
    from nola.train.formats import convert
    from scripts.tiny import save_random_gpt2
    from nola.gpt2.tokenizer import encode_file

    repo, root = tmp_path / "repo", tmp_path / "root"
    shutil.copytree(PAPER, repo / "scripts" / "paper")
    (repo / "src").symlink_to(REPO / "src")
    _write(repo / "eval" / "e2e" / "measure_scores.py", (
        "import json, sys\n"
        "refs = open(sys.argv[1]).read().rstrip('\\n').split('\\n\\n')\n"
        "preds = open(sys.argv[2]).read().removesuffix('\\n').split('\\n')\n"
        "assert sys.argv[3:] == ['-p', '--json'] and len(refs) == len(preds) == 3, (len(refs), len(preds))\n"
        "print(json.dumps({'BLEU': 0.5, 'NIST': 5.0, 'METEOR': 0.3, 'ROUGE_L': 0.4, 'CIDEr': 1.0}))\n"))
    base = save_random_gpt2(tmp_path / "base", n_positions=512)
    (root / "pretrained_checkpoints").mkdir(parents=True)
    shutil.copy(base / "pytorch_model.bin", root / "pretrained_checkpoints" / "gpt2-medium-pytorch_model.bin")
    shutil.copytree(mirror / "vocab", root / "vocab")
    e2e = root / "data" / "e2e"
    convert("e2e", mirror / "data" / "e2e" / "valid.txt", tmp_path / "all.jsonl")
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    for split, part in (("train", lines[:24]), ("valid", lines[24:32]), ("test", lines[32:50])):  # test: 3 MRs
        _write(e2e / f"{split}_formatted.jsonl", "\n".join(part) + "\n")
        encode_file(e2e / f"{split}_formatted.jsonl", e2e / f"{split}.jsonl", root / "vocab")
    _write(repo / "scripts" / "paper" / "tiny_row.sh", (
        '. "$(dirname "${BASH_SOURCE[0]}")/common.sh"\nparse_args "$@"\n'
        f"run_row tiny_row {base / 'card.json'} gpt2-medium e2e --lr 0.1 --weight_decay 0.0 "
        "--nola_rank 8 --nola_c 1.0 --nola_qv --nola_num_basis 50 --qnola --qbits 3\n"))
    python = tmp_path / "python"
    _write(python, ('#!/usr/bin/env bash\n'
                    'if [ "${1:-}" = -c ] && [[ "${2:-}" == *torch.cuda.device_count* ]]; then echo 2; exit 0; fi\n'
                    f'exec {sys.executable} "$@"\n'))
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "NOLA_RUN_ROOT": str(root), "RESULTS_DIR": str(tmp_path / "results"),
           "MASTER_PORT": "29617", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(["bash", str(repo / "scripts" / "paper" / "tiny_row.sh")], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    work = root / "trained_models" / "tiny_row"
    row = json.loads((tmp_path / "results" / "e2e.jsonl").read_text())
    # 24 lines / (8 / 2 processes) = 6 batches per process-epoch over 2 processes -> 3 steps x 5 epochs
    assert row["checkpoint"] == str(work / "model.15")  # the last adapter folder
    assert row["params"] == 2 * 2 * 2 * 50
    assert row["adapter_bytes"] == sum(p.stat().st_size for p in (work / "model.15").iterdir())
    assert row["nproc"] == 2 and row["scores"]["BLEU"] == 0.5 and len(row["commands"]) == 4
    assert "--nproc_per_node=2" in row["commands"][0] and "--train_batch_size 4" in row["commands"][0]
    assert (work / "commands.txt").read_text().splitlines() == row["commands"]
