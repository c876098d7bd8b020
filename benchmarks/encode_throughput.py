"""Encoding throughput (lines/s): the pipeline's fast GPT-2 tokenizer against the slow reference BPE.

Both encode every line of a raw E2E file the way gpt2_encode.py does (context + EOS, " " +
completion + EOS) in the same run; the ids must agree. Also times loading an E2E-train-sized
encoded file (42k lines) into FTDataset. Writes benchmarks/results/encode_throughput.json.

Usage: python benchmarks/encode_throughput.py [--input data/e2e/valid.txt] [--vocab ./vocab]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from nola.gpt2.dataset import FTDataset
from nola.errors import fail, run_cli
from nola.fileio import atomic_open
from nola.train.formats import read_e2e
from nola.gpt2.tokenizer import EOS_ID, encode_records, load_reference_tokenizer, load_tokenizer

E2E_TRAIN_LINES = 42061


def _default(relative: str) -> Path:
    """``relative`` under the repo if present, else under $NOLA_DATA_MIRROR."""
    local = REPO / relative
    mirror = os.environ.get("NOLA_DATA_MIRROR")
    if not local.exists() and mirror:
        return Path(mirror) / relative
    return local


def _slow_encode(tokenizer, records: list[dict]) -> list[dict]:
    return [
        {
            "context": tokenizer.encode(r["context"], add_special_tokens=False) + [EOS_ID],
            "completion": tokenizer.encode(" " + r["completion"], add_special_tokens=False) + [EOS_ID],
        }
        for r in records
    ]


def _load_time(encoded: list[dict]) -> float:
    """Seconds to load an E2E-train-sized encoded file (the given lines repeated) into FTDataset."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for i in range(E2E_TRAIN_LINES):
                handle.write(json.dumps(encoded[i % len(encoded)]) + "\n")
        start = time.perf_counter()
        data = FTDataset(path, seq_len=512, eval_len=64)
        elapsed = time.perf_counter() - start
        assert len(data) == E2E_TRAIN_LINES
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default=str(_default("data/e2e/valid.txt")), help="raw E2E file")
    parser.add_argument("--vocab", default=str(_default("vocab")), help="folder with encoder.json, vocab.bpe")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per tokenizer (best is kept)")
    parser.add_argument("--output", default=str(REPO / "benchmarks/results/encode_throughput.json"))
    args = parser.parse_args()
    if not Path(args.input).is_file():
        fail(f"--input {args.input} not found: run `bash create_datasets.sh` or set NOLA_DATA_MIRROR")
    records = read_e2e(args.input)

    timings = {"fast": {"build": [], "encode": []}, "slow": {"build": [], "encode": []}}
    outputs = {}
    for _ in range(args.repeats):
        for name, build, encode in (
            ("fast", load_tokenizer, lambda tok: encode_records(tok, records)),
            ("slow", load_reference_tokenizer, lambda tok: _slow_encode(tok, records)),  # fresh BPE cache
        ):
            start = time.perf_counter()
            tokenizer = build(args.vocab)
            built = time.perf_counter()
            outputs[name] = encode(tokenizer)
            timings[name]["build"].append(built - start)
            timings[name]["encode"].append(time.perf_counter() - built)
    if outputs["fast"] != outputs["slow"]:
        fail("the fast and the reference tokenizer disagree on this file")

    rate = {name: len(records) / min(t["encode"]) for name, t in timings.items()}
    result = {
        "benchmark": "encode_throughput",
        "input": str(args.input),
        "lines": len(records),
        "what": "lines/s encoding context + EOS and ' ' + completion + EOS (best of the repeats); "
        "tokenizer construction timed apart",
        "fast_lines_per_s": round(rate["fast"], 1),
        "slow_reference_lines_per_s": round(rate["slow"], 1),
        "speedup": round(rate["fast"] / rate["slow"], 2),
        "seconds": {name: {k: [round(x, 4) for x in v] for k, v in t.items()} for name, t in timings.items()},
        "identical_ids": True,
        "ftdataset_load_42k_lines_s": round(_load_time(outputs["fast"]), 3),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    with atomic_open(args.output, "w") as handle:
        json.dump(result, handle, indent=1)
        handle.write("\n")
    print(
        f"{len(records)} lines: fast {rate['fast']:.0f} lines/s, slow reference {rate['slow']:.0f} lines/s "
        f"({result['speedup']:.1f}x), identical ids; FTDataset load of {E2E_TRAIN_LINES} lines "
        f"{result['ftdataset_load_42k_lines_s']:.2f} s -> {args.output}"
    )


if __name__ == "__main__":
    run_cli(main)
