"""Shared helpers for the benchmark scripts: timing, memory, machine facts, tables, JSON results."""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def tiny_gpt2(out: Path, **shape: int) -> Path:
    """A random GPT-2 folder written by ``scripts/make_tiny_gpt2.py`` (as a user makes one)."""
    flags = [f"--{k}={v}" for k, v in shape.items()]
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_gpt2.py"), "--out", str(out), *flags],
                   check=True, capture_output=True)
    return out


def machine() -> dict:
    """Date, CPU/GPU, thread count and library versions, stored with every result."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1,
                   device: torch.device = torch.device("cpu")) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_times(systems: dict[str, Callable[[int], object]], rounds: int,
                      device: torch.device = torch.device("cpu"), warmup: bool = True,
                      clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Times of each system in every round ``r`` (called as ``fn(r)``), the systems taking
    turns within every round so that a slow spell of the machine hits them all alike; with
    ``warmup`` one untimed run each (``fn(0)``) first. ``clock``: wall time by default;
    ``time.process_time`` counts this process's CPU seconds, which a crowded machine's waits for a
    core do not inflate."""
    for fn in systems.values() if warmup else ():
        fn(0)
    times: dict[str, list[float]] = {name: [] for name in systems}
    for r in range(rounds):
        for name, fn in systems.items():
            sync(device)
            start = clock()
            fn(r)
            sync(device)
            times[name].append(clock() - start)
    return times


def interleaved_seconds(systems: dict[str, Callable[[], object]], rounds: int,
                        device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Median time of each system over ``rounds`` of :func:`interleaved_times`."""
    calls = {name: (lambda r, fn=fn: fn()) for name, fn in systems.items()}
    return {name: statistics.median(t) for name, t in interleaved_times(calls, rounds, device).items()}


def peak_memory_bytes(device: torch.device) -> int:
    """Peak CUDA allocation on GPU, else this process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def print_table(title: str, headers: list[str], rows: list[list[object]]) -> str:
    """Print (and return) a Markdown table."""
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = [f"### {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


def save_results(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine facts added."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=1) + "\n")
    return path
