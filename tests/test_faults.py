"""gpt2_ft.py under faults: a reused or busy --work_dir, SIGTERM at two points, a full disk (a
file-size limit, RLIMIT_FSIZE, on the child), a torn log row, stale temp files, a non-finite loss
and a stuck rank under torch.distributed.launch. Every interrupted run resumes to the uninterrupted
run's weights. (kill -9 mid-save: tests/test_train_run.py.)"""
from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nola.gpt2.checkpoint import read_checkpoint
from nola.errors import run_cli
from src.gpt2_ft import main
from src.llama_ft import main as llama_main
from tests.test_llama_ft import NOLA as LLAMA_NOLA, common as llama_common, setup  # noqa: F401
from tests.test_train_run import (NOLA, REPO, SCRIPT, adapter, base, common, data, free_port,  # noqa: F401
                                  max_diff, rows)

STEPS = 32


def run_args(tiny_gpt2, base, data) -> list[str]:
    """32 steps of batch 4 on 48 examples (12 an epoch), a log row every step, a checkpoint at
    steps 8, 12 (epoch end), 16, 24 (epoch end) and 32."""
    return common(tiny_gpt2, base, data["equal"], data["valid"]) + NOLA + [
        "--nola_num_basis", "64", "--lr", "0.05", "--max_step", str(STEPS), "--save_interval", "8",
        "--log_interval", "1", "--eval_interval", "100", "--train_batch_size", "4", "--random_seed", "5"]


@pytest.fixture(scope="module")
def whole(tiny_gpt2, base, data, tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must reproduce."""
    work = tmp_path_factory.mktemp("whole")
    main(run_args(tiny_gpt2, base, data) + ["--work_dir", str(work)])
    return work


def same_as_whole(work: Path, whole: Path) -> None:
    assert max_diff(adapter(work / f"model.{STEPS}"), adapter(whole / f"model.{STEPS}")) <= 1e-6
    assert [r["step"] for r in rows(work, "train")] == list(range(1, STEPS + 1))
    assert [r["step"] for r in rows(work, "valid")] == [12, 24, 32]
    assert not list(work.glob(".*.tmp"))


def fails(argv: list[str], capsys, script=main, status: int = 2) -> str:
    """The one ``error:`` line (besides log lines) of a run that must exit with ``status``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: script(argv))
    assert exit_info.value.code == status
    text = capsys.readouterr().err
    assert len(error_lines(text)) == 1 and "Traceback" not in text, text[-3000:]
    return error_lines(text)[0]


def child(argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, SCRIPT] + argv, stderr=subprocess.PIPE, text=True, cwd=REPO, **kwargs)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_reused_work_dir_is_refused_and_overwrite_starts_afresh(tiny_gpt2, base, data, tmp_path, capsys):
    work = tmp_path / "run"
    short = run_args(tiny_gpt2, base, data) + ["--max_step", "4", "--work_dir", str(work)]
    main(short)
    before = {p.name: p.read_bytes() if p.is_file() else sorted(p.iterdir())
              for p in work.iterdir() if not p.name.startswith(".")}
    assert set(before) == {"log.jsonl", "model.4", "resume.pt"}
    line = fails(short, capsys)
    assert line == (f"error: --work_dir {work} holds an earlier run (log.jsonl, model.4, resume.pt): continue it "
                    f"with --resume {work}, or start again with --overwrite (deletes those files), or choose another "
                    f"--work_dir")
    assert {p.name: p.read_bytes() if p.is_file() else sorted(p.iterdir())
            for p in work.iterdir() if not p.name.startswith(".")} == before
    assert "--overwrite would delete the run" in fails(short + ["--resume", str(work), "--overwrite"], capsys)
    # --overwrite: the earlier run's outputs go (its model.4/, a --save_full model.9.pt, stale temp file and
    # folder), others stay.
    (work / "model.9.pt").write_bytes(b"an earlier run's full state dict")
    (work / ".model.8.pt.k2j_x9ab.tmp").write_bytes(b"half")
    (work / ".model.8.k2j_x9ab.tmp").mkdir()
    (work / "notes.txt").write_text("mine")
    main(short + ["--overwrite", "--max_step", "3", "--save_interval", "3"])
    assert sorted(p.name for p in work.iterdir()) == [".lock", "log.jsonl", "model.3", "notes.txt", "resume.pt"]
    assert [r["step"] for r in rows(work, "train")] == [1, 2, 3]  # no row of the earlier run left
    assert read_checkpoint(work / "resume.pt")["step"] == 3


def test_sigterm_mid_run_is_a_clean_stop_the_lock_refuses_a_second_run_and_resume_is_exact(
        tiny_gpt2, base, data, whole, tmp_path, capsys):
    """Stopped (SIGSTOP) right after its step-8 checkpoint, the run still holds the folder: a second
    run there, fresh or resuming, is refused naming its pid. Then SIGTERM (and SIGCONT): the
    interrupt path."""
    work = tmp_path / "run"
    args = run_args(tiny_gpt2, base, data) + ["--work_dir", str(work)]
    proc = child(args)
    wait_for(work / "resume.pt", proc)
    os.kill(proc.pid, signal.SIGSTOP)
    busy = (rf"error: --work_dir {re.escape(str(work))} is in use by another run \(pid {proc.pid} on \S+, started "
            r"[\d-]+ [\d:]+\); wait for it to end or choose another --work_dir")
    for second in (args, args + ["--resume", str(work)]):
        line = fails(second, capsys)
        assert re.fullmatch(busy, line), line
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    hint = rf"interrupted at step \d+; continue from the last checkpoint with --resume {re.escape(str(work))}$"
    assert re.search(hint, stderr.strip()), stderr[-2000:]
    assert not list(work.glob(".*.tmp")) and not error_lines(stderr)
    main(run_args(tiny_gpt2, base, data) + ["--resume", str(work)])
    same_as_whole(work, whole)


TERMINATOR = """
import io, os, runpy, signal, sys
import torch
real_save = torch.save

def terminated_save(obj, handle, *args, **kwargs):
    # SIGTERM arrives halfway through writing resume.pt at step 16.
    if isinstance(obj, dict) and obj.get("format") == "nola-resume" and obj.get("step") == 16:
        buffer = io.BytesIO()
        real_save(obj, buffer)
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        os.kill(os.getpid(), signal.SIGTERM)
    return real_save(obj, handle, *args, **kwargs)

torch.save = terminated_save
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def test_sigterm_mid_save_leaves_no_temp_file_and_resume_is_exact(tiny_gpt2, base, data, whole, tmp_path):
    work = tmp_path / "run"
    args = run_args(tiny_gpt2, base, data) + ["--work_dir", str(work)]
    driver = tmp_path / "terminator.py"
    driver.write_text(TERMINATOR.format(script=SCRIPT))
    proc = subprocess.run([sys.executable, str(driver)] + args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert "interrupted at step 16; continue from the last checkpoint with --resume" in proc.stderr
    assert not list(work.glob(".*.tmp"))
    assert read_checkpoint(work / "resume.pt")["step"] == 12  # the previous one, whole
    main(args + ["--resume", str(work)])
    same_as_whole(work, whole)


def limited(size: int):
    """preexec_fn: the child may write no file beyond ``size`` bytes (EFBIG, as a full disk's ENOSPC)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def test_full_disk_during_a_log_append_or_a_save_damages_nothing_and_resume_is_exact(
        tiny_gpt2, base, data, whole, tmp_path):
    work = tmp_path / "run"
    args = run_args(tiny_gpt2, base, data) + ["--work_dir", str(work)]
    main(args + ["--stop_at_step", "22"])
    log_before = (work / "log.jsonl").read_bytes()
    resume_size = (work / "resume.pt").stat().st_size
    model_size = max(p.stat().st_size for p in (work / "model.22").iterdir())  # the limit is per file
    assert model_size < len(log_before) < 16384 < resume_size  # what the limits below rely on
    again = args + ["--resume", str(work)]
    ending = (rf" \(EFBIG: File too large\); the last complete checkpoint is step 22 in {re.escape(str(work))}: "
              rf"free space, then --resume {re.escape(str(work))}")
    # The step-23 log row does not fit: it is cut back off and the run stops.
    proc = child(again, preexec_fn=limited(len(log_before) + 40))
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1 and len(error_lines(stderr)) == 1, stderr[-2000:]
    assert re.fullmatch(rf"error: {re.escape(str(work))}: no space left while writing at step 23" + ending,
                        error_lines(stderr)[0]), stderr[-2000:]
    assert (work / "log.jsonl").read_bytes() == log_before
    # The log fits, resume.pt does not: the step-24 adapter folder is written whole, resume.pt stays at step 22.
    proc = child(again, preexec_fn=limited(16384))
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1 and len(error_lines(stderr)) == 1, stderr[-2000:]
    assert re.fullmatch(rf"error: {re.escape(str(work))}: no space left while writing at step 24" + ending,
                        error_lines(stderr)[0]), stderr[-2000:]
    assert read_checkpoint(work / "resume.pt")["step"] == 22 and read_checkpoint(work / "model.24")["step"] == 24
    assert not list(work.glob(".*.tmp"))
    main(again)
    same_as_whole(work, whole)


def test_torn_log_rows_and_stale_temp_files(tiny_gpt2, base, data, whole, tmp_path, capsys, caplog):
    """A crash mid-append leaves a torn last row: resume drops it with a warning. A bad row before
    the last is no torn append: an error naming the file and line. Stale temp files are removed."""
    work = tmp_path / "run"
    args = run_args(tiny_gpt2, base, data) + ["--work_dir", str(work)]
    main(args + ["--stop_at_step", "8"])
    log_path = work / "log.jsonl"
    good = log_path.read_text()
    log_path.write_text('{"step": 1, "spl\n' + good)
    assert fails(args + ["--resume", str(work)], capsys) == (
        f"error: {log_path}:1: not a JSON row of a training log; remove that line (or the file) and resume again")
    log_path.write_text(good + '{"step": 9, "split": "tr')
    stale = [work / ".resume.pt.a1b2c3d4.tmp", work / ".model.8.pt.zz_9x8y7.tmp", work / ".model.8.zz_9x8y7.tmp"]
    for path in stale[:2]:
        path.write_bytes(b"\x80half")
    stale[2].mkdir()  # a half-built adapter folder (nola.train.cache.building)
    (stale[2] / "adapter_model.safetensors").write_bytes(b"\x80half")
    main(args + ["--resume", str(work)])
    assert f"{log_path}:{good.count(chr(10)) + 1}: dropped a torn last row" in caplog.text
    assert not any(path.exists() for path in stale)
    same_as_whole(work, whole)


@pytest.mark.parametrize("lr, log_interval, save_interval, what, step, saved", [
    ("1e20", 1, 1, "the training loss", 2, [1]),  # found at step 2's log line
    ("1e20", 100, 3, "the training loss", 2, []),  # no log line: found before the step-3 save
    ("1e30", 100, 1, "a trained parameter", 1, []),  # the first update overflows: found before its save
])
def test_a_non_finite_loss_stops_the_run_without_a_checkpoint_of_it(tiny_gpt2, base, data, tmp_path, capsys, lr,
                                                                     log_interval, save_interval, what, step, saved):
    """--lr 1e20 blows the coefficients up in the first update (to ~1e20, still finite), so the
    adapted projections overflow and step 2's loss is NaN; --lr 1e30 overflows the coefficients."""
    work = tmp_path / "run"
    argv = run_args(tiny_gpt2, base, data) + ["--lr", lr, "--save_interval", str(save_interval),
                                              "--log_interval", str(log_interval), "--work_dir", str(work)]
    line = fails(argv, capsys, status=1)
    last = (f"the last complete checkpoint is step {saved[-1]} in {work} (lower --lr or check the data, then "
            f"--resume {work})" if saved else
            "no checkpoint was saved yet (lower --lr or check the data, then start again with --overwrite)")
    assert line == f"error: {what} is not finite (NaN or inf) at step {step}; stopped without saving it: {last}"
    assert sorted(work.glob("model.*")) == [work / f"model.{s}" for s in saved]
    assert all(torch.isfinite(t).all() for s in saved for t in adapter(work / f"model.{s}").values())
    assert all(r["step"] < step for r in map(json.loads, (work / "log.jsonl").read_text().splitlines()))


def rank_pids(launcher: int) -> dict[int, int]:
    """{rank: pid} of the launcher's worker processes (from /proc: their parent and RANK)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == launcher and "RANK" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


def running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_a_stuck_rank_stops_the_job_within_the_timeout(tiny_gpt2, base, data, tmp_path):
    """Two processes under torch.distributed.launch; rank 1 is frozen (SIGSTOP) mid-run. Rank 0 waits
    in its next collective for --dist_timeout seconds, then exits with the line naming its rank and
    step. When rank 1 thaws (SIGCONT) it finds the launcher's SIGTERM and stops with its own line."""
    timeout = 4
    work, log_file = tmp_path / "run", tmp_path / "stderr.txt"
    args = run_args(tiny_gpt2, base, data) + ["--train_batch_size", "2", "--max_step", "100000",
                                              "--dist_timeout", str(timeout), "--work_dir", str(work)]
    cmd = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2", f"--master_port={free_port()}",
           SCRIPT] + args
    with open(log_file, "w") as stderr:  # a file, not a pipe: a full pipe would stall the job itself
        launcher = subprocess.Popen(cmd, stderr=stderr, stdout=stderr, cwd=REPO)
    try:
        deadline = time.monotonic() + 240
        while not ((work / "log.jsonl").exists() and len((work / "log.jsonl").read_text().splitlines()) >= 3):
            assert launcher.poll() is None and time.monotonic() < deadline, log_file.read_text()[-3000:]
            time.sleep(0.05)
        ranks = rank_pids(launcher.pid)
        assert sorted(ranks) == [0, 1]
        os.kill(ranks[1], signal.SIGSTOP)
        stopped = time.monotonic()
        while running(ranks[0]) and time.monotonic() < stopped + timeout + 60:
            time.sleep(0.05)
        waited = time.monotonic() - stopped
        os.kill(ranks[1], signal.SIGCONT)
        launcher.wait(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    text = log_file.read_text()
    # Rank 0 may be mid-step when rank 1 stops, so its wait starts a little later; the margin is the
    # time to print and exit on a loaded machine.
    assert timeout - 0.5 <= waited <= timeout + 15, (waited, text[-3000:])
    assert launcher.returncode != 0
    assert re.search(rf"^error: rank 0, step \d+: lost contact with the other processes \(one stopped, hung or "
                     rf"died; --dist_timeout {timeout} s\): .*Timed out.*; (no checkpoint was saved yet: start again "
                     rf"with --overwrite|the last complete checkpoint is step \d+ in {re.escape(str(work))}: --resume "
                     rf"{re.escape(str(work))})$", text, re.M), text[-3000:]
    assert re.search(r"^(error: rank 1, step \d+: lost contact|.*rank 1: interrupted at step \d+; continue)", text,
                     re.M), text[-3000:]


def test_llama_ft_refuses_a_reused_output_dir_overwrites_it_and_stops_on_a_non_finite_loss(setup, tmp_path, capsys):
    """The same rules through llama_ft.py's loop; --lr 1e20 makes update 2's loss NaN."""
    out = tmp_path / "adapter"
    argv = llama_common(setup, out) + LLAMA_NOLA + ["--per_device_train_batch_size", "4",
                                                    "--gradient_accumulation_steps", "1", "--max_steps", "3",
                                                    "--lr", "0.05", "--save_steps", "1"]
    llama_main(argv)
    assert fails(argv, capsys, llama_main) == (
        f"error: --output_dir {out} holds an earlier run (adapter_config.json, adapter_model.safetensors, log.jsonl, "
        f"resume.pt): continue it with --resume {out}, or start again with --overwrite (deletes those files), or "
        f"choose another --output_dir")
    line = fails(argv + ["--overwrite", "--lr", "1e20"], capsys, llama_main, status=1)
    assert line == (f"error: the training loss is not finite (NaN or inf) at step 2; stopped without saving it: the "
                    f"last complete checkpoint is step 1 in {out} (lower --lr or check the data, then --resume {out})")
    assert torch.load(out / "resume.pt", weights_only=True)["step"] == 1
    assert [json.loads(row)["step"] for row in (out / "log.jsonl").read_text().splitlines()] == [1]
