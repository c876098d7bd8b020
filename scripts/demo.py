"""The paper's pipeline in miniature: adapt a GPT-2 to E2E with NOLA and score it against the unadapted base.

Default: a small GPT-2 pre-trained on the WebNLG dev pairs and the E2E valid references (built once,
cached; see scripts/pretrain.py). ``--gpt2 sm|md|lg``: the real GPT-2 from pretrained_checkpoints/. Either way the
adaptation runs the paper's command chain — torch.distributed.launch → src/gpt2_ft.py →
src/gpt2_beam.py → src/gpt2_decode.py → eval/e2e/measure_scores.py — on E2E MRs, and the base
without adapter goes through the same beam search, decoding and scoring.

    bash scripts/demo.sh [--gpt2 sm|md|lg] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nola.errors import fail, run_cli
from nola.formats import read_formatted

REPO = Path(__file__).resolve().parents[1]

METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
GPT2_FILES = {"sm": "gpt2-pytorch_model.bin", "md": "gpt2-medium-pytorch_model.bin",
              "lg": "gpt2-large-pytorch_model.bin"}
GPT2_NAMES = {"sm": "gpt2", "md": "gpt2-medium", "lg": "gpt2-large"}


@dataclass(frozen=True)
class Plan:
    """What one demo adapts and how long: the E2E valid split gives the training MRs (first
    ``train_contexts``) and the validation MRs (the next ``valid_contexts``); the first
    ``test_contexts`` MRs of the test split are decoded and scored."""

    num_basis: int
    steps: int
    seq_len: int
    train_contexts: int = 500
    valid_contexts: int = 20
    test_contexts: int = 40
    batch: int = 8
    lr: float = 0.1
    warmup: int = 30


TINY = Plan(num_basis=100, steps=300, seq_len=96)  # validation loss 2.850 at step 150, 2.842 at 300
REAL = Plan(num_basis=1000, steps=300, seq_len=128)  # the paper's k=l=1000 on q and v


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


def launch(script: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=1", f"src/{script}", *flags]


def subsets(stages: Stages, e2e: Path, plan: Plan) -> None:
    py, sub = sys.executable, "scripts/subset.py"
    pieces = [("valid", 0, plan.train_contexts, "demo_train"),
              ("valid", plan.train_contexts, plan.valid_contexts, "demo_valid"),
              ("test", 0, plan.test_contexts, "demo_test")]
    script = " && ".join(
        f"'{py}' {sub} --formatted '{e2e}/{split}_formatted.jsonl' --encoded '{e2e}/{split}.jsonl' "
        f"--skip {skip} --contexts {count} --out '{e2e}/{name}'" for split, skip, count, name in pieces)
    stages.run("subsets", ["bash", "-c", script])


def beam_decode_score(stages: Stages, name: str, card: str, ckpt: Path, out: Path, e2e: Path, vocab: Path) -> dict:
    """gpt2_beam.py → gpt2_decode.py → measure_scores.py for one checkpoint; the scores."""
    run = out / name
    stages.run(f"beam_{name}", launch(
        "gpt2_beam.py", "--data", str(e2e / "demo_test.jsonl"), "--batch_size", "10", "--seq_len", "128",
        "--eval_len", "64", "--model_card", card, "--init_checkpoint", str(ckpt), "--platform", "local",
        "--beam", "10", "--length_penalty", "0.8", "--no_repeat_ngram_size", "4", "--repetition_penalty", "1.0",
        "--eos_token_id", "628", "--work_dir", str(run), "--output_file", "predict.jsonl"))
    stages.run(f"decode_{name}", [sys.executable, "src/gpt2_decode.py", "--vocab", str(vocab),
                                  "--sample_file", str(run / "predict.jsonl"),
                                  "--input_file", str(e2e / "demo_test_formatted.jsonl"),
                                  "--output_ref_file", str(run / "e2e_ref.txt"),
                                  "--output_pred_file", str(run / "e2e_pred.txt")])
    scores = run / "scores.json"
    stages.run(f"score_{name}", [sys.executable, "eval/e2e/measure_scores.py", str(run / "e2e_ref.txt"),
                                 str(run / "e2e_pred.txt"), "-p", "--json"], stdout=scores)
    return json.loads(scores.read_text())["scores"]


def examples(e2e: Path, out: Path, count: int = 3) -> list[tuple[str, str, str, str]]:
    """(MR, first reference, NOLA output, base output) of the first ``count`` test MRs."""
    mrs = list(dict.fromkeys(r["context"] for r in read_formatted(e2e / "demo_test_formatted.jsonl")))
    refs = [group.splitlines()[0] for group in (out / "nola" / "e2e_ref.txt").read_text().strip().split("\n\n")]
    nola = (out / "nola" / "e2e_pred.txt").read_text().splitlines()
    base = (out / "base" / "e2e_pred.txt").read_text().splitlines()
    return list(zip(mrs, refs, nola, base))[:count]


def report(card: str, base_ckpt: Path, ckpt: Path, train_log: Path, scores: dict, e2e: Path, out: Path,
           plan: Plan) -> None:
    from nola.build import model_config
    from nola.fileio import sha256_file
    from nola.layers import LoRAConfig
    from nola.sizes import adapter_file_bytes

    print(f"\nE2E test, first {plan.test_contexts} MRs (beam 10, length penalty 0.8, no-repeat 4):")
    print(f"  {'metric':<8} {'unadapted base':>15} {'NOLA':>10}")
    for metric in METRICS:
        print(f"  {metric:<8} {scores['base'][metric]:>15.4f} {scores['nola'][metric]:>10.4f}")
    found = re.findall(r"trainable parameters: (.*)", train_log.read_text(encoding="utf-8"))
    print(f"trained parameters: {found[-1] if found else '(not found in ' + str(train_log) + ')'}")
    lora_bytes, lora_params = adapter_file_bytes(model_config(card), LoRAConfig(dim=4, alpha=32.0),
                                                 str(base_ckpt), sha256_file(base_ckpt))
    size = ckpt.stat().st_size
    print(f"adapter file: {ckpt} {size:,} bytes; LoRA r=4 on the same q, v would write "
          f"{lora_bytes:,} bytes ({lora_params:,} parameters), {lora_bytes / size:.1f}x as many")
    for mr, ref, nola, base in examples(e2e, out):
        print(f"\n  MR:        {mr}\n  reference: {ref}\n  NOLA:      {nola}\n  base:      {base}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpt2", choices=sorted(GPT2_FILES), default=None,
                        help="adapt the real GPT-2 S/M/L from pretrained_checkpoints/ instead of the small cached base")
    parser.add_argument("--checkpoints", default=str(REPO / "pretrained_checkpoints"),
                        help="folder holding the GPT-2 files of download_pretrained_checkpoints.sh")
    parser.add_argument("--out", default=os.environ.get("DEMO_DIR", str(REPO / "demo_run")),
                        help="work folder (default: $DEMO_DIR, else ./demo_run)")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.gpt2:
        base_ckpt = Path(args.checkpoints).resolve() / GPT2_FILES[args.gpt2]
        if not base_ckpt.is_file():
            fail(f"{base_ckpt} not found: run `bash download_pretrained_checkpoints.sh {GPT2_NAMES[args.gpt2]}` "
                 "first (or pass --checkpoints DIR)")
    out = Path(args.out).resolve()
    plan = REAL if args.gpt2 else TINY
    stages = Stages(out / "logs", total=9 if args.gpt2 else 10)
    stages.run("datasets", ["bash", "create_datasets.sh", str(out)])
    e2e = out / "data" / "e2e"
    subsets(stages, e2e, plan)
    if args.gpt2:
        card = f"gpt2.{args.gpt2}"
        origin = f"GPT-2 {args.gpt2.upper()} ({base_ckpt.name})"
    else:
        from scripts.pretrain import pretrained_base

        stages.n += 1
        print(f"== [{stages.n}/{stages.total}] base (a small GPT-2 pre-trained on WebNLG dev pairs + E2E valid references)",
              flush=True)
        t0 = time.perf_counter()
        base = pretrained_base(out, out)
        card, base_ckpt = str(base.card), base.checkpoint
        origin = f"small GPT-2 {'built now' if base.built_now else 'reused'} ({base.folder})"
        print(f"   {'built' if base.built_now else 'reused'} in {time.perf_counter() - t0:.0f} s: {base.folder}",
              flush=True)
    work = out / "nola"
    train_log = stages.run("train", launch(
        "gpt2_ft.py", "--train_data", str(e2e / "demo_train.jsonl"), "--valid_data", str(e2e / "demo_valid.jsonl"),
        "--train_batch_size", str(plan.batch), "--grad_acc", "1", "--valid_batch_size", "8",
        "--seq_len", str(plan.seq_len), "--model_card", card, "--init_checkpoint", str(base_ckpt),
        "--platform", "local", "--clip", "0.0", "--lr", str(plan.lr), "--weight_decay", "0.0", "--correct_bias",
        "--adam_beta2", "0.999", "--scheduler", "linear", "--warmup_step", str(plan.warmup),
        "--max_step", str(plan.steps), "--save_interval", str(10 * plan.steps),
        "--log_interval", str(plan.steps // 6), "--eval_interval", str(plan.steps // 2),
        "--nola_rank", "8", "--nola_c", "1.0", "--nola_qv", "--nola_num_basis", str(plan.num_basis),
        "--label_smooth", "0.1", "--work_dir", str(work), "--overwrite", "--random_seed", "110"))
    ckpt = work / f"model.{plan.steps}.pt"
    scores = {name: beam_decode_score(stages, name, card, path, out, e2e, out / "vocab")
              for name, path in (("nola", ckpt), ("base", base_ckpt))}
    print(f"\n== demo finished in {time.perf_counter() - start:.0f} s; base: {origin}")
    report(card, base_ckpt, ckpt, train_log, scores, e2e, out, plan)
    print(f"\nloss curves: python scripts/plot_log.py {work}")


if __name__ == "__main__":
    run_cli(main)
