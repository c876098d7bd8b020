"""Collect what scripts/gpu_check.sh ran into one JSON: the GPU, each test's outcome, the benchmark.

    python scripts/gpu_report.py --junit FILE --tests_status N --throughput FILE --bench_status N --out FILE
"""
from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from nola.fileio import atomic_open


def test_outcomes(junit: Path) -> list[dict]:
    """Every test case of a pytest ``--junitxml`` file: name, outcome, seconds, and the failure text."""
    if not junit.is_file():
        return []
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        problem = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(getattr(problem, "tag", ""), "passed")
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time", 0.0)),
                      **({"message": (problem.get("message") or "")[:2000]} if problem is not None else {})})
    return cases


def gpu_facts() -> dict:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": count,
            "names": [torch.cuda.get_device_name(i) for i in range(count)]}


def report(junit: Path, tests_status: int, throughput: Path, bench_status: int) -> dict:
    cases = test_outcomes(junit)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "gpu": gpu_facts(),
        "tests": {"status": tests_status, "passed": sum(c["outcome"] == "passed" for c in cases),
                  "not_passed": [c["test"] for c in cases if c["outcome"] != "passed"],
                  "nccl_two_processes": next((c["outcome"] for c in cases if "two_processes" in c["test"]),
                                             "not run: fewer than 2 GPUs"),
                  "cases": cases},
        "throughput": {"status": bench_status,
                       **(json.loads(throughput.read_text()) if throughput.is_file() else {"missing": True})},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--junit", type=Path, required=True)
    parser.add_argument("--tests_status", type=int, required=True)
    parser.add_argument("--throughput", type=Path, required=True)
    parser.add_argument("--bench_status", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    payload = report(args.junit, args.tests_status, args.throughput, args.bench_status)
    with atomic_open(args.out, "w") as handle:
        handle.write(json.dumps(payload, indent=1) + "\n")
    t = payload["tests"]
    print(f"wrote {args.out}: {t['passed']} cuda tests passed, not passed: {t['not_passed'] or 'none'}; "
          f"NCCL: {t['nccl_two_processes']}; benchmark exit status {args.bench_status} (124: timed out)")


if __name__ == "__main__":
    main()
