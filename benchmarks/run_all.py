"""Run every benchmark and collect their tables in benchmarks/results/summary[_quick].md.

    python benchmarks/run_all.py [--quick]     (--quick: under 5 minutes on a quiet 2-core CPU)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, machine

HERE = Path(__file__).resolve().parent
# (script, takes --quick)
BENCHMARKS = [("adapter_size.py", False), ("basis_memory.py", False), ("encode_throughput.py", False),
              ("decode.py", True), ("train_step.py", True), ("train_throughput.py", True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    facts = machine()
    header = (f"Measured {facts['date']} on {facts['cpu']} ({facts['cores']} cores, {facts['threads']} threads), "
              f"torch {facts['torch']}" + (f", GPU {facts['cuda']}" if facts["cuda"] else ", no GPU") + ".")
    sections = [header, ""]
    start = time.perf_counter()
    for script, has_quick in BENCHMARKS:
        cmd = [sys.executable, str(HERE / script)] + (["--quick"] if args.quick and has_quick else [])
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{script} failed:\n{out.stderr[-3000:]}")
        print(out.stdout, flush=True)
        tables = "\n".join(line for line in out.stdout.splitlines() if line.startswith(("###", "|")) or not line)
        if not tables.strip():
            tables = out.stdout
        sections.append(f"#### `{' '.join(Path(c).name if c.endswith('.py') else c for c in cmd[1:])}` "
                        f"({time.perf_counter() - t0:.0f} s)\n\n{tables.strip()}\n")
    sections.append(f"Total: {time.perf_counter() - start:.0f} s.")
    path = RESULTS / ("summary_quick.md" if args.quick else "summary.md")
    path.write_text("\n".join(sections) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
