"""The CUDA paths: bases generated on the GPU are the CPU's bits, and fp16 / bf16 training steps
follow fp32. Marked ``cuda``: deselected where no GPU is visible, run by ``scripts/gpu_check.sh``
(the last test here checks that deselection on every machine)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.gpt2_ft import main
from nola.basis import uniform_rows
from nola.layers import NOLAConfig, NOLAGroup

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.cuda
@pytest.mark.parametrize("seed, rows, size, start, stop", [(0, 1000, 8192, 0, None), (123456789, 300, 4096, 17, 250),
                                                           (2**31 - 1, 64, 20480, 5, 6)])
def test_bases_generated_on_cuda_are_the_cpu_bits(seed, rows, size, start, stop):
    cpu = uniform_rows(seed, rows, size, 0.03, start, stop, device="cpu")
    gpu = uniform_rows(seed, rows, size, 0.03, start, stop, device="cuda")
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


@pytest.mark.cuda
def test_onthefly_factors_on_cuda_equal_materialised_on_cpu():
    cfg = dict(rank=8, num_basis=1000, qv=True, chunk_rows=128)
    cpu = NOLAGroup("attn_q", 24, 1024, 1024, NOLAConfig(**cfg, mode="materialised"))
    gpu = NOLAGroup("attn_q", 24, 1024, 1024, NOLAConfig(**cfg, mode="onthefly")).cuda()
    with torch.no_grad():
        for group in (cpu, gpu):
            group.alpha.copy_(torch.linspace(-1, 1, 24 * 1000).view(24, 1000))
            group.beta.copy_(torch.linspace(1, -1, 24 * 1000).view(24, 1000))
    for a, b in zip(cpu.factors(), gpu.factors()):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-5, atol=1e-6)


def _losses(work: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (work / "log.jsonl").read_text().splitlines()) if r["split"] == "train"]


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["--fp16", "--bf16"])
def test_mixed_precision_training_steps_on_cuda_follow_fp32(tiny_gpt2, e2e_data, tmp_path, precision):
    """Three steps of NOLA (the CUDA default, on the fly) and LoRA: fp16 with loss scaling and bf16
    autocast give fp32's losses to the precision of their 11- and 8-bit mantissas."""
    argv = ["--device", "cuda", "--train_data", str(e2e_data / "valid.jsonl"), "--valid_data",
            str(e2e_data / "valid.jsonl"), "--seq_len", "64", "--train_batch_size", "4", "--model_card",
            str(tiny_gpt2 / "card.json"), "--init_checkpoint", str(tiny_gpt2 / "pytorch_model.bin"),
            "--max_step", "3", "--log_interval", "1", "--eval_interval", "1000", "--save_interval", "1000",
            "--lr", "0.05", "--label_smooth", "0.1", "--platform", "local"]
    tolerance = {"--fp16": 2e-3, "--bf16": 2e-2}[precision]
    for adapter in (["--nola_rank", "8", "--nola_qv"], ["--lora_dim", "4", "--lora_alpha", "32"]):
        main(argv + adapter + ["--work_dir", str(tmp_path / "fp32")])
        main(argv + adapter + [precision, "--work_dir", str(tmp_path / "mixed")])
        fp32, mixed = _losses(tmp_path / "fp32"), _losses(tmp_path / "mixed")
        assert len(fp32) == len(mixed) == 3
        assert mixed == pytest.approx(fp32, rel=tolerance), (adapter, precision, fp32, mixed)


def test_cuda_checks_are_deselected_not_skipped_without_a_gpu():
    """With no GPU visible, collection lists none of the cuda checks and reports them deselected."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/test_cuda.py",
                           "tests/test_train_trim.py"], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    listed = [line for line in proc.stdout.splitlines() if "::" in line]
    assert "tests/test_cuda.py::test_cuda_checks_are_deselected_not_skipped_without_a_gpu" in listed
    assert any("[cpu-" in line for line in listed) and not any("cuda" in line.split("::")[1] for line in listed[1:])
    summary = proc.stdout.strip().splitlines()[-1]
    assert "deselected" in summary and "skipped" not in summary, summary


def test_gpu_check_without_a_gpu_is_one_error_line_and_exit_2(tmp_path):
    result = REPO / "benchmarks" / "results" / "gpu_check.json"
    before = result.stat().st_mtime_ns if result.exists() else None
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: {os.environ.get('PYTHON', '.venv/bin/python')} sees no CUDA device: run "
        "scripts/gpu_check.sh on a GPU machine with a CUDA build of torch"]
    assert (result.stat().st_mtime_ns if result.exists() else None) == before


def test_gpu_report_reads_pytests_junit_file(tmp_path):
    """The report gpu_check.sh writes, from a real pytest run's junit XML (a CPU test file here)."""
    from scripts.gpu_report import report

    junit = tmp_path / "run.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                    "tests/test_fileio.py"], capture_output=True, cwd=REPO, timeout=300, check=True)
    out = report(junit, 0, tmp_path / "absent.json", 124)
    tests = out["tests"]
    assert tests["passed"] == len(tests["cases"]) > 0 and tests["not_passed"] == []
    assert all(c["test"].startswith("tests.test_fileio::") and c["seconds"] >= 0 for c in tests["cases"])
    assert tests["nccl_two_processes"] == "not run: fewer than 2 GPUs"
    assert out["throughput"] == {"status": 124, "missing": True}
    assert out["gpu"]["gpus"] == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
