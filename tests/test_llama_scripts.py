"""The LLaMA-2 paper rows (scripts/paper/alpaca_llama2_*.sh) and the Alpaca/MMLU downloader."""
from __future__ import annotations

import os
import shlex
import subprocess
import tarfile
from pathlib import Path

import pytest

from nola.train.cli import adapter_request, config_from
from nola.config import AlpacaTrainConfig, LlamaSource, MMLUConfig
from eval.mmlu import build_parser as mmlu_parser
from src.llama_ft import build_parser as train_parser

REPO = Path(__file__).resolve().parents[1]
# size -> (layers, batch per device, accumulation, LoRA lr), from UCDvision/NOLA llama/scripts
OFFICIAL = {"7b": (32, 16, 16, 2e-4), "13b": (40, 16, 16, 1e-4), "70b": (80, 2, 128, 1e-4)}


def run_script(name: str, *args: str, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NOLA_RUN_ROOT": str(root), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(["bash", str(REPO / "scripts" / "paper" / name), *args], capture_output=True, text=True,
                          timeout=120, env=env)


def command_args(line: str, script: str) -> list[str]:
    words = shlex.split(line)
    return words[words.index(next(w for w in words if w.endswith(script))) + 1:]


@pytest.mark.parametrize("size", list(OFFICIAL))
@pytest.mark.parametrize("kind", ["nola", "lora"])
def test_dry_run_commands_parse_with_the_scripts_own_parsers(tmp_path, size, kind):
    proc = run_script(f"alpaca_llama2_{size}_{kind}.sh", "--dry-run", root=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    train = train_parser().parse_args(command_args(next(l for l in lines if "llama_ft.py" in l), "llama_ft.py"))
    cfg, source, request = config_from(AlpacaTrainConfig, train), config_from(LlamaSource, train), adapter_request(train)
    layers, batch, acc, lora_lr = OFFICIAL[size]
    name = f"alpaca_llama2_{size}_{kind}"
    assert Path(cfg.output_dir) == tmp_path / "trained_models" / name  # not the official 7b folder
    assert Path(source.model_name_or_path).name == f"Llama-2-{size}-hf"
    assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, cfg.max_steps) == (batch, acc, 200)
    assert (cfg.source_max_len, cfg.target_max_len, cfg.max_grad_norm, cfg.adam_beta2) == (384, 512, 0.9, 0.999)
    assert (cfg.lr_scheduler_type, cfg.weight_decay, cfg.train_seed, cfg.gradient_checkpointing) == (
        "constant", 0.0, 0, True)
    assert source.bf16 and source.targets == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"]
    if kind == "nola":
        assert source.bits == 4 and cfg.lr == 1e-3 and not request.wants_lora
        assert request.nola == {"rank": 16, "num_basis": 512, "c": 4.0, "seed_per_layer": True}
    else:
        assert source.bits == 16 and cfg.lr == lora_lr and not request.wants_nola
        assert request.lora == {"dim": 1, "alpha": 16.0, "dropout": 0.0}
    mmlu = mmlu_parser().parse_args(command_args(next(l for l in lines if "mmlu.py" in l), "mmlu.py"))
    evaluation = config_from(MMLUConfig, mmlu)
    assert (evaluation.shots, evaluation.split, Path(evaluation.adapter)) == (5, "test", Path(cfg.output_dir))
    assert config_from(LlamaSource, mmlu).bits == source.bits


def test_two_processes_keep_the_global_batch(tmp_path):
    proc = run_script("alpaca_llama2_70b_nola.sh", "--dry-run", "--nproc_per_node", "4", root=tmp_path)
    line = next(l for l in proc.stdout.splitlines() if "llama_ft.py" in l)
    assert "--nproc_per_node=4" in line
    assert config_from(AlpacaTrainConfig, train_parser().parse_args(
        command_args(line, "llama_ft.py"))).gradient_accumulation_steps == 32


def test_without_a_gpu_a_row_stops_at_once_with_one_error_line(tmp_path):
    proc = run_script("alpaca_llama2_7b_nola.sh", root=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: no CUDA GPU")
    assert not (tmp_path / "trained_models").exists()


def make_mirror(root: Path) -> Path:
    """A mirror holding an Alpaca JSON and an MMLU archive in the official data.tar layout."""
    (root / "data" / "alpaca").mkdir(parents=True)
    (root / "data" / "alpaca" / "alpaca_data.json").write_text('[{"instruction": "i", "input": "", "output": "o"}]')
    staging = root / "staging" / "data"
    for split in ("dev", "val", "test", "auxiliary_train"):
        (staging / split).mkdir(parents=True)
        (staging / split / f"anatomy_{split}.csv").write_text("q,a,b,c,d,A\n")
    (root / "data" / "mmlu").mkdir(parents=True)
    with tarfile.open(root / "data" / "mmlu" / "data.tar", "w") as tar:
        tar.add(staging, arcname="data")
    return root


def test_download_refuses_unpinned_files_then_copies_and_unpacks_from_the_mirror(tmp_path):
    mirror = make_mirror(tmp_path / "mirror")
    env = {**os.environ, "NOLA_DATA_MIRROR": str(mirror)}
    cmd = ["bash", str(REPO / "scripts" / "llama" / "download_data.sh"), "--root", str(tmp_path / "run")]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 1 and "no SHA-256 is pinned" in refused.stderr
    assert not (tmp_path / "run" / "data" / "alpaca" / "alpaca_data.json").exists()
    taken = subprocess.run(cmd + ["--unpinned-ok"], capture_output=True, text=True, timeout=120, env=env)
    assert taken.returncode == 0, taken.stderr
    data = tmp_path / "run" / "data"
    assert (data / "alpaca" / "alpaca_data.json").read_bytes() == (
        mirror / "data" / "alpaca" / "alpaca_data.json").read_bytes()
    assert sorted(p.relative_to(data / "mmlu").as_posix() for p in (data / "mmlu").rglob("*.csv")) == [
        "dev/anatomy_dev.csv", "test/anatomy_test.csv", "val/anatomy_val.csv"]
    assert "sha256" in taken.stderr  # the sum obtained is printed, to be pinned
