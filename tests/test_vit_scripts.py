"""The ViT paper rows (scripts/paper/vit_*.sh): the --dry-run commands parsed by src/vit_ft.py's own
parser, the one-line stop without a GPU, and the recorded row beside the published numbers."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nola.train.cli import config_from
from nola.config import ViTConfig
from scripts.paper.results import load_published, load_rows, render_table
from src.vit_ft import build_parser

REPO = Path(__file__).resolve().parents[1]
ROWS = {"linear": ("linear", 4, 1024), "full": ("full", 4, 1024), "lora_r4": ("lora", 4, 1024),
        "lora_r1": ("lora", 1, 1024), "nola_mlp_k1024": ("nola_mlp", 1, 1024), "nola_mlp_k512": ("nola_mlp", 1, 512)}


def run_script(name: str, *args: str, root: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts/paper" / name), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "NOLA_RUN_ROOT": str(root), "PYTHON": sys.executable,
                                           "CUDA_VISIBLE_DEVICES": "", **env})


@pytest.mark.parametrize("arch", ["l", "b"])
@pytest.mark.parametrize("row", list(ROWS))
def test_dry_run_commands_parse(tmp_path, arch, row):
    proc = run_script(f"vit_{arch}_{row}.sh", "--dry-run", "--dataset", "cub200", "--shots", "10", root=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    train = [shlex.split(line) for line in lines if "src/vit_ft.py" in line]
    configs = [config_from(ViTConfig, build_parser().parse_args(words[2:])) for words in train]
    assert len(configs) == 12
    assert sorted((c.kshot_seed, c.seed) for c in configs) == [(j, k) for j in range(4) for k in range(3)]
    assert len({c.outdir for c in configs}) == 12
    train_type, rank, ka = ROWS[row]
    for cfg in configs:
        assert Path(cfg.train_data_path) == Path("data/vit/cub200") and cfg.vit == ("large" if arch == "l" else "base")
        assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.kshot, cfg.fp16, cfg.augment) == (
            5e-3, 16, 50, 10, True, "official")
        assert (cfg.train_type, cfg.rank, cfg.ka, cfg.label_smoothing, cfg.min_lr) == (train_type, rank, ka, 0.1, 1e-6)
        assert Path(cfg.outdir).is_relative_to(tmp_path / "trained_models" / f"vit_{arch}_{row}" / "cub200_10shot")
    record = shlex.split(next(line for line in lines if "vit_record.py" in line))
    runs = record[record.index("--runs") + 1:]
    assert sorted(runs) == sorted(c.outdir for c in configs)
    assert record[record.index("--name") + 1] == f"vit_{arch}_{row}_cub200_10shot"


def test_every_dataset_and_shot_by_default(tmp_path):
    proc = run_script("vit_l_nola_mlp_k1024.sh", "--dry-run", root=tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = [shlex.split(line) for line in proc.stdout.splitlines() if "vit_record.py" in line]
    assert [w[w.index("--name") + 1] for w in names] == [f"vit_l_nola_mlp_k1024_{d}_{k}shot" for d in
                                                         ("cifar100", "cub200", "caltech101") for k in (5, 10)]


@pytest.mark.parametrize("args,env,expect", [
    ((), {}, "no CUDA GPU"),
    (("--dataset", "imagenet"), {}, "--dataset 'imagenet'"),
    (("--shots", "five"), {}, "--shots 'five'"),
    (("--epochs", "3"), {}, "unknown option --epochs"),
])
def test_stops_with_one_line(tmp_path, args, env, expect):
    proc = run_script("vit_l_lora_r4.sh", *args, root=tmp_path, **env)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], proc.stderr
    assert not (tmp_path / "trained_models").exists()


def test_recorded_row_beside_published(tmp_path):
    cell = tmp_path / "cell"
    accuracies = [0.80 + 0.01 * i for i in range(12)]
    runs = []
    for i, acc in enumerate(accuracies):
        run = cell / f"v{i % 4}" / f"run{i // 4}"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"accuracy": acc, "trained_without_head": 98304}))
        runs.append(str(run))
    (tmp_path / "commands.txt").write_text("python src/vit_ft.py ...\n")
    proc = subprocess.run([sys.executable, str(REPO / "scripts/paper/vit_record.py"), "--name",
                           "vit_l_nola_mlp_k1024_cifar100_5shot", "--model", "vit-l", "--dataset", "cifar100",
                           "--commands", str(tmp_path / "commands.txt"), "--results_dir", str(tmp_path / "results"),
                           "--runs", *runs], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    [row] = load_rows(tmp_path / "results")
    mean = sum(accuracies) / 12
    std = (sum((a - mean) ** 2 for a in accuracies) / 12) ** 0.5
    assert row["scores"]["ACC"] == pytest.approx(mean) and row["scores"]["ACC_STD"] == pytest.approx(std)
    assert row["params"] == 98304 and row["accuracies"] == accuracies
    table = render_table(load_published(REPO / "results/published.json"), [row])
    line = next(l for l in table.splitlines() if l.startswith("| vit_l_nola_mlp_k1024_cifar100_5shot"))
    assert f"{100 * mean:.1f} / 83.6" in line and f"{100 * std:.1f} / 0.9" in line and "0.098M / 94K" in line
    missing = subprocess.run([sys.executable, str(REPO / "scripts/paper/vit_record.py"), "--name", "x", "--model",
                              "vit-l", "--dataset", "cifar100", "--commands", str(tmp_path / "commands.txt"),
                              "--results_dir", str(tmp_path / "r2"), "--runs", str(tmp_path / "nowhere")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "nowhere/result.json is missing" in missing.stderr
    assert not (tmp_path / "r2").exists()


def test_published_vit_rows_name_a_script_cell():
    published = json.loads((REPO / "results/published.json").read_text())
    ids = [r["id"] for r in published["rows"] if r["dataset"] in ("cifar100", "cub200", "caltech101")]
    assert ids == ["vit_l_lora_r4_cifar100_5shot", "vit_l_nola_mlp_k1024_cifar100_5shot"]
    for row_id in ids:
        script, dataset, shots = row_id.rsplit("_", 2)
        assert (REPO / "scripts/paper" / f"{script}.sh").is_file() and row_id.endswith(f"_{dataset}_{shots}")
