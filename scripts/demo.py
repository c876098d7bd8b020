"""NOLA on real pre-trained weights, on a CPU: adapt SmolLM2-135M-Instruct to E2E and score it against
the unadapted model.

The chain is the one a user runs by hand: ``download_pretrained_checkpoints.sh smollm2-135m-instruct``
(cached) → ``create_datasets.sh`` → ``src/llama_ft.py`` (NOLA on q_proj and v_proj, trained on E2E
valid MRs) → ``src/llama_beam.py`` (beam 10, length penalty 0.8, no-repeat 4; reference and prediction
files in gpt2_decode.py's layout) → ``eval/e2e/measure_scores.py``; the unadapted model goes through
the same generation and scoring on the same test MRs.

    bash scripts/demo.sh [--out DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nola.train.cache import building, cache_root
from nola.errors import fail, run_cli
from nola.fileio import check_writable, sha256_file
from nola.train.formats import read_formatted

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
TARGETS = "q_proj,v_proj"
BEAM_FLAGS = ("--beam", "10", "--length_penalty", "0.8", "--no_repeat_ngram_size", "4", "--repetition_penalty", "1.0",
              "--eval_len", "64", "--batch_size", "10")
# What decides the unadapted model's outputs besides the model, the MRs and the flags: its generation is
# cached under a hash of all of it, since it never changes from run to run.
GENERATION_CODE = ("src/llama_beam.py", "src/nola/decoding/beam.py", "src/nola/causal/causal_decode.py",
                   "src/nola/causal/causal_lm.py", "src/nola/causal/d2t.py", "src/nola/decoding/decode.py")
DECODE_FILES = ("e2e_ref.txt", "e2e_pred.txt")


@dataclass(frozen=True)
class Plan:
    """The demo's recipe. Training MRs are the first ``train_contexts`` of the E2E valid split (all
    their references), validation the next ``valid_contexts``; the first ``test_contexts`` MRs of the
    test split are generated and scored."""

    rank: int = 8
    num_basis: int = 256
    steps: int = 80
    batch: int = 8
    lr: float = 0.02
    train_contexts: int = 500
    valid_contexts: int = 10
    test_contexts: int = 40


PLAN = Plan()


class Stages:
    """Numbered stages, each a subprocess whose output goes to its own log."""

    def __init__(self, logs: Path, total: int) -> None:
        self.logs, self.total, self.n = logs, total, 0
        logs.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, cmd: list[str], stdout: Path | None = None) -> Path:
        self.n += 1
        log = self.logs / f"{self.n}-{name}.log"
        print(f"== [{self.n}/{self.total}] {name}   (log: {log})", flush=True)
        start = time.perf_counter()
        with open(log, "w", encoding="utf-8") as err:
            if stdout is None:
                code = subprocess.run(cmd, cwd=REPO, stdout=err, stderr=subprocess.STDOUT).returncode
            else:
                with open(stdout, "w", encoding="utf-8") as out:
                    code = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=err).returncode
        if code != 0:
            tail = log.read_text(encoding="utf-8").strip().splitlines()[-3:]
            print("\n".join("   " + line for line in tail), file=sys.stderr)
            print(f"demo failed at stage '{name}': see {log}", file=sys.stderr)
            raise SystemExit(1)
        print(f"   done in {time.perf_counter() - start:.0f} s", flush=True)
        return log

    def reuse(self, name: str, source: Path) -> None:
        self.n += 1
        print(f"== [{self.n}/{self.total}] {name}   (reused: {source})", flush=True)


def subsets(stages: Stages, e2e: Path, plan: Plan) -> None:
    py, sub = sys.executable, "scripts/subset.py"
    pieces = [("valid", 0, plan.train_contexts, "demo_train"),
              ("valid", plan.train_contexts, plan.valid_contexts, "demo_valid"),
              ("test", 0, plan.test_contexts, "demo_test")]
    script = " && ".join(
        f"'{py}' {sub} --formatted '{e2e}/{split}_formatted.jsonl' --encoded '{e2e}/{split}.jsonl' "
        f"--skip {skip} --contexts {count} --out '{e2e}/{name}'" for split, skip, count, name in pieces)
    stages.run("subsets", ["bash", "-c", script])


def unadapted_key(model: Path, data: Path) -> str:
    """16 hex digits over everything the unadapted model's generation depends on: the model folder's files
    (their SHA-256 as the fetch recorded and, in stage 1, just verified them), the MRs, the beam flags, the
    generation code and the torch / transformers versions."""
    from importlib.metadata import version

    from nola.train.lm_fetch import read_record

    record = read_record(model)
    if record is None:
        fail(f"{model} has no fetch record: run `bash download_pretrained_checkpoints.sh {MODEL}` again")
    digest = hashlib.sha256(json.dumps([BEAM_FLAGS, version("torch"), version("transformers"),
                                        record["files"]], sort_keys=True).encode())
    for path in (data, *(REPO / code for code in GENERATION_CODE)):
        digest.update(f"{path.name}:{sha256_file(path)};".encode())
    return digest.hexdigest()[:16]


def generate(stages: Stages, name: str, model: Path, adapter: Path | None, data: Path, run: Path) -> None:
    """llama_beam.py with the paper's beam settings: ``run``/e2e_ref.txt and e2e_pred.txt."""
    flags = ["--adapter", str(adapter)] if adapter else []
    stages.run(f"generate_{name}", [
        sys.executable, "src/llama_beam.py", "--model_name_or_path", str(model), "--bits", "32", *flags,
        "--data", str(data), *BEAM_FLAGS, "--output_ref_file", str(run / DECODE_FILES[0]),
        "--output_pred_file", str(run / DECODE_FILES[1])])


def generate_unadapted(stages: Stages, model: Path, data: Path, run: Path) -> None:
    """The unadapted model's decode files, generated once per :func:`unadapted_key` and then reused."""
    cached = cache_root() / f"demo-unadapted-{unadapted_key(model, data)}"
    if not all((cached / name).is_file() for name in DECODE_FILES):
        generate(stages, "base", model, None, data, run)
        with building(cached) as tmp:
            for name in DECODE_FILES:
                shutil.copyfile(run / name, tmp / name)
        return
    run.mkdir(parents=True, exist_ok=True)
    for name in DECODE_FILES:
        shutil.copyfile(cached / name, run / name)
    stages.reuse("generate_base", cached)


def score(stages: Stages, name: str, run: Path) -> dict:
    scores = run / "scores.json"
    stages.run(f"score_{name}", [sys.executable, "eval/e2e/measure_scores.py", str(run / DECODE_FILES[0]),
                                 str(run / DECODE_FILES[1]), "-p", "--json"], stdout=scores)
    return json.loads(scores.read_text())["scores"]


def restaurant(context: str) -> str:
    """The ``name`` slot of an E2E MR (``name : Blue Spice | Type : ...``)."""
    for slot in context.split("|"):
        key, _, value = slot.partition(":")
        if key.strip() == "name":
            return value.strip()
    return ""


def report(model: Path, adapter: Path, scores: dict, e2e: Path, out: Path, plan: Plan) -> None:
    from nola.gpt2.sizes import causal_adapter_size

    contexts = list(dict.fromkeys(r["context"] for r in read_formatted(e2e / "demo_test_formatted.jsonl")))
    refs = [group.splitlines()[0] for group in (out / "nola" / "e2e_ref.txt").read_text().strip().split("\n\n")]
    nola = (out / "nola" / "e2e_pred.txt").read_text().splitlines()
    base = (out / "base" / "e2e_pred.txt").read_text().splitlines()
    print(f"\nE2E test, first {len(contexts)} MRs (beam 10, length penalty 0.8, no-repeat 4):")
    print(f"  {'metric':<8} {'unadapted':>10} {'NOLA':>10}")
    for metric in METRICS:
        print(f"  {metric:<8} {scores['base'][metric]:>10.4f} {scores['nola'][metric]:>10.4f}")
    for label, outputs in (("NOLA", nola), ("unadapted", base)):
        named = sum(bool(restaurant(c)) and restaurant(c) in text for c, text in zip(contexts, outputs))
        print(f"outputs naming the MR's restaurant: {label} {named}/{len(contexts)}")
    nola_bytes = sum(f.stat().st_size for f in adapter.iterdir() if f.name.startswith("adapter_"))
    nola_params = causal_adapter_size(model, adapter_dir=adapter)[1]
    lora_bytes, lora_params = causal_adapter_size(model, lora_rank=plan.rank, targets=TARGETS.split(","))
    print(f"trained parameters: NOLA {nola_params:,} (r={plan.rank}, k=l={plan.num_basis} on {TARGETS}); "
          f"LoRA r={plan.rank} on the same projections: {lora_params:,} ({lora_params / nola_params:.0f}x)")
    print(f"adapter files: NOLA {nola_bytes:,} bytes ({adapter}); LoRA r={plan.rank} would write {lora_bytes:,} "
          f"bytes ({lora_bytes / nola_bytes:.0f}x)")
    for context, ref, adapted, unadapted in list(zip(contexts, refs, nola, base))[:3]:
        print(f"\n  MR:        {context}\n  reference: {ref}\n  NOLA:      {adapted}\n  unadapted: {unadapted}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("DEMO_DIR", str(REPO / "demo_run")),
                        help="work folder (default: $DEMO_DIR, else ./demo_run)")
    args = parser.parse_args()
    start = time.perf_counter()
    check_writable(args.out, "--out", folder=True)
    out, plan = Path(args.out).resolve(), PLAN
    stages = Stages(out / "logs", total=8)
    stages.run("model", ["bash", "download_pretrained_checkpoints.sh", MODEL])
    model = REPO / "pretrained_checkpoints" / MODEL
    stages.run("datasets", ["bash", "create_datasets.sh", str(out)])
    e2e = out / "data" / "e2e"
    subsets(stages, e2e, plan)
    work = out / "nola"
    stages.run("train", [
        sys.executable, "src/llama_ft.py", "--model_name_or_path", str(model), "--bits", "32",
        "--dataset", str(e2e / "demo_train_formatted.jsonl"), "--eval_dataset", str(e2e / "demo_valid_formatted.jsonl"),
        "--target_modules", TARGETS, "--nola_rank", str(plan.rank),
        "--nola_num_basis", str(plan.num_basis), "--per_device_train_batch_size", str(plan.batch),
        "--gradient_accumulation_steps", "1", "--max_steps", str(plan.steps), "--lr", str(plan.lr),
        "--max_grad_norm", "0", "--logging_steps", str(plan.steps // 4), "--save_steps", str(plan.steps),
        "--output_dir", str(work), "--overwrite"])
    test = e2e / "demo_test_formatted.jsonl"
    generate(stages, "nola", model, work, test, out / "nola")
    scores = {"nola": score(stages, "nola", out / "nola")}
    generate_unadapted(stages, model, test, out / "base")
    scores["base"] = score(stages, "base", out / "base")
    print(f"\n== demo finished in {time.perf_counter() - start:.0f} s; model: {model}")
    report(model, work, scores, e2e, out, plan)
    print(f"\nloss curves: python scripts/plot_log.py {work}")


if __name__ == "__main__":
    run_cli(main)
