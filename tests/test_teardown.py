"""How a 2-process Gloo run ends, and a 2-process run resumed from inside an update.

Once, under load, a finished 2-process run aborted on rank 1 with "terminate called without an
active exception" (SIGABRT) and the launcher exited 1. Gloo's threads outlive
``destroy_process_group`` once DDP has wrapped a model, and a C++ thread that needs the GIL while
the interpreter tears down is ended by ``pthread_exit``, whose unwinding calls ``std::terminate``
(:func:`nola.train.distributed.leave`). A process that joined a group now ends without that teardown.
The first test makes the late thread certain (a collective whose Python callback runs only once
the other rank joins, with a teardown that takes a while); the second checks that a real
``gpt2_ft.py`` run never reaches the teardown with Gloo threads alive; the slow one repeats real runs
on a CPU kept busy."""
from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from src.gpt2_ft import main
from tests.test_train_run import NOLA, REPO, SCRIPT, adapter, base, common, data, free_port, max_diff  # noqa: F401

LATE_COLLECTIVE = """
import time
import torch
import torch.distributed as dist
from nola.config import LaunchConfig
from nola.train.distributed import init_distributed
from nola.errors import run_cli


class SlowTeardown:
    def __del__(self):
        time.sleep(3)  # the interpreter is still tearing down when the collective below ends


def main():
    ctx = init_distributed(LaunchConfig(threads=1))
    if ctx.rank == 1:  # a collective still running, with Python for Gloo's thread to call when it ends
        work = dist.all_reduce(torch.ones(4), async_op=True)
        work.get_future().then(lambda fut: fut.value())
        globals()["keep"] = SlowTeardown()
    else:
        time.sleep(2)
        dist.all_reduce(torch.ones(4))


run_cli(main)
"""

# gpt2_ft.py as `python gpt2_ft.py ...` runs it, plus a record of the threads alive if the
# interpreter's teardown (atexit) is ever reached.
PROBE = """
import atexit, os, runpy, sys


def probe():
    names = [open(f"/proc/self/task/{{t}}/comm").read().strip() for t in os.listdir("/proc/self/task")]
    with open(os.path.join({folder!r}, "teardown." + os.environ["RANK"]), "w") as handle:
        handle.write("\\n".join(names))


atexit.register(probe)
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def launch(argv: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2", f"--master_port={free_port()}"]
    return subprocess.run(cmd + argv, capture_output=True, text=True, timeout=300, cwd=cwd)


def test_a_collective_still_running_at_the_end_does_not_abort_the_process(tmp_path):
    script = tmp_path / "late.py"
    script.write_text(LATE_COLLECTIVE)
    proc = launch([str(script)])
    output = proc.stdout + proc.stderr
    assert "terminate called" not in output and proc.returncode == 0, output[-3000:]


def test_two_processes_stopped_inside_an_update_resume_exactly_and_end_without_teardown(
        tiny_gpt2, base, data, tmp_path):
    """2 ranks x batch 2, --grad_acc 2, stopped at step 3 (inside the second update) and resumed, vs one
    process at batch 4 in one go (the same run to float rounding, tests/test_train_run.py): each rank's
    half-accumulated gradient is in resume.pt. Neither 2-process run reaches interpreter teardown
    with Gloo's threads alive, and both exit 0."""
    args = common(tiny_gpt2, base, data["mixed"], data["valid"]) + NOLA + [
        "--nola_num_basis", "64", "--lr", "0.05", "--scheduler", "constant", "--max_step", "6",
        "--save_interval", "3", "--log_interval", "3", "--eval_interval", "100", "--random_seed", "3",
        "--grad_acc", "2"]
    probes = tmp_path / "probes"
    probes.mkdir()
    driver = tmp_path / "probe.py"
    driver.write_text(PROBE.format(folder=str(probes), script=SCRIPT))
    split = args + ["--train_batch_size", "2", "--work_dir", str(tmp_path / "split")]
    for extra in (["--stop_at_step", "3"], ["--resume", str(tmp_path / "split")]):
        proc = launch([str(driver), *split, *extra])
        assert proc.returncode == 0 and "terminate called" not in proc.stderr, proc.stderr[-3000:]
        alive = {p.name: p.read_text().split() for p in probes.iterdir()}
        assert not any(name.startswith(("pt_gloo", "gloo")) for names in alive.values() for name in names), alive
    main(args + ["--train_batch_size", "4", "--work_dir", str(tmp_path / "one")])
    assert max_diff(adapter(tmp_path / "split" / "model.6"), adapter(tmp_path / "one" / "model.6")) <= 1e-6


def _busy(seconds: float) -> None:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.mark.slow
def test_repeated_two_process_runs_on_a_busy_cpu_all_exit_0(tiny_gpt2, base, data, tmp_path):
    """Eight short 2-process runs while 4 processes keep the CPU busy: every one exits 0, no abort."""
    args = common(tiny_gpt2, base, data["equal"], data["valid"]) + NOLA + [
        "--max_step", "2", "--train_batch_size", "4", "--save_interval", "1", "--eval_interval", "100"]
    hogs = [multiprocessing.get_context("spawn").Process(target=_busy, args=(600,), daemon=True) for _ in range(4)]
    for hog in hogs:
        hog.start()
    try:
        for i in range(8):
            proc = launch([SCRIPT, *args, "--work_dir", str(tmp_path / f"run{i}")])
            assert proc.returncode == 0 and "terminate called" not in proc.stderr, (i, proc.stderr[-3000:])
    finally:
        for hog in hogs:
            hog.terminate()
            hog.join()
