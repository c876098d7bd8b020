"""The real-weights table: NOLA against LoRA and HF PEFT's VeRA, VB-LoRA, FourierFT and TinyLoRA on
SmolLM2-135M-Instruct, E2E, on a CPU.

Every row is trained by ``src/llama_ft.py`` on the same batches (the first ``train_contexts`` MRs of the
E2E valid split, all their references; the seed fixes the order), with the same constant-lr AdamW schedule
and the same number of updates; only the adapter and its learning rate differ. Each row's learning rate is
chosen by a short sweep: every candidate trains ``sweep_steps`` updates (``--stop_at_step``), the one with
the lowest validation loss (the next ``valid_contexts`` MRs) is resumed to ``steps`` updates (with a constant
lr, the sweep's run is exactly the prefix of the full run). Every row is then decoded by
``src/llama_beam.py`` (beam 10, length penalty 0.8, no-repeat 4) and scored by ``eval/e2e/measure_scores.py``.

    bash scripts/real_table.sh [--out DIR] [--quick]

Writes ``results/real_e2e.{md,json,png}`` (``--quick``: a smoke test of three rows on a few MRs, written
under ``--out`` only). Every stage's outputs stay in ``--out``: a second run reuses what is complete.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nola.errors import fail, run_cli
from nola.fileio import atomic_open, check_writable
from nola.train.formats import read_formatted, write_formatted

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
QV = "q_proj,v_proj"
ALL_SEVEN = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
BEAM_FLAGS = ("--beam", "10", "--length_penalty", "0.8", "--no_repeat_ngram_size", "4", "--repetition_penalty", "1.0",
              "--eval_len", "64", "--batch_size", "10")


@dataclass(frozen=True)
class Row:
    """One adapter: its llama_ft.py flags, targets and candidate learning rates (``lr_from``: take another
    row's chosen rate instead of sweeping)."""

    name: str
    label: str
    flags: tuple[str, ...]
    targets: str = QV
    lrs: tuple[float, ...] = ()
    lr_from: str | None = None
    why: str = ""


def peft_row(name: str, label: str, method: str, options: str, lrs: tuple[float, ...], why: str) -> Row:
    return Row(name, label, ("--peft_method", method, "--peft_options", options), lrs=lrs, why=why)


# Budgets: NOLA on q,v at r=8, k=l=256 trains 30,720 numbers (0.53x LoRA r=1's 57,600); the peers are set
# as close to that as their hyper-parameters allow (the counts the loop logs are in the table).
ROWS = (
    Row("lora_r1", "LoRA r=1 (q,v)", ("--lora_dim", "1", "--lora_alpha", "8"), lrs=(1e-3, 3e-3, 1e-2),
        why="microsoft/LoRA's scale alpha/r = 8"),
    Row("lora_r4", "LoRA r=4 (q,v)", ("--lora_dim", "4", "--lora_alpha", "32"), lrs=(1e-3, 3e-3, 1e-2),
        why="microsoft/LoRA's GPT-2 E2E setting (r=4, alpha=32)"),
    Row("nola_qv", "NOLA (q,v)", ("--nola_rank", "8", "--nola_num_basis", "256"), lrs=(0.01, 0.02, 0.04),
        why="r=8, k=l=256 per role"),
    Row("qnola_qv", "qNOLA 3-bit (q,v)", ("--nola_rank", "8", "--nola_num_basis", "256", "--qnola", "--qbits", "3"),
        lr_from="nola_qv", why="NOLA (q,v) with 3-bit coefficients; its lr is NOLA's (same parameterisation)"),
    Row("nola_all", "NOLA (all seven)", ("--nola_rank", "8", "--nola_num_basis", "73"), targets=ALL_SEVEN,
        lrs=(0.01, 0.02, 0.04), why="k=l=73 on 7 projections x 30 layers = 30,660 (the paper's LLaMA setting)"),
    peft_row("vera", "PEFT VeRA (q,v)", "vera", "r=128", (1e-2, 3e-2, 1e-1),
             "r=128: 60 x 128 + 30 x (576 + 192) = 30,720"),
    peft_row("vblora", "PEFT VB-LoRA (q,v)", "vblora", "r=4,num_vectors=22,vector_length=192,save_only_topk_weights=true",
             (3e-3, 1e-2, 3e-2), "r=4, a bank of 22 vectors of 192, top-2: 30,624; the file keeps the top-k only"),
    peft_row("fourierft", "PEFT FourierFT (q,v)", "fourierft", "n_frequency=512", (3e-3, 1e-2, 3e-2),
             "512 spectral coefficients per projection, scaling 150 (PEFT's default)"),
    peft_row("tinylora", "PEFT TinyLoRA (q,v)", "tinylora", "r=32,u=512", (3e-3, 1e-2, 3e-2),
             "SVD rank 32, u=512 mixing weights per projection (u <= r^2, so every weight counts)"),
)


@dataclass(frozen=True)
class Plan:
    """The recipe: ``steps`` updates of ``batch`` examples; the sweep's candidates train ``sweep_steps``;
    every ``test_every``-th distinct test MR is scored (the unadapted model, whose outputs run to
    ``--eval_len``, on the first ``unadapted_contexts`` of them)."""

    steps: int = 80
    sweep_steps: int = 20
    batch: int = 8
    logging_steps: int = 10
    train_contexts: int = 500
    valid_contexts: int = 10
    test_every: int = 5
    test_contexts: int | None = None
    unadapted_contexts: int = 40
    rows: tuple[str, ...] = ("nola_qv", "lora_r1", "vera", "tinylora", "vblora", "fourierft", "qnola_qv", "nola_all",
                             "lora_r4")


FULL = Plan()
QUICK = Plan(steps=4, sweep_steps=2, batch=2, logging_steps=1, train_contexts=8, valid_contexts=2, test_every=1,
             test_contexts=3, unadapted_contexts=2, rows=("nola_qv", "lora_r1", "vera"))


def quick_rows() -> dict[str, Row]:
    """In --quick mode each swept row tries two rates (its first two)."""
    return {r.name: dataclasses.replace(r, lrs=r.lrs[:2]) for r in ROWS}


@dataclass
class Proc:
    """One finished subprocess: wall seconds, peak resident memory of the process (MiB), its log."""

    seconds: float
    peak_mib: float
    log: Path


def run(cmd: list[str], log: Path, stdout: Path | None = None) -> Proc:
    """Run ``cmd`` from the repository root; its stderr (and stdout unless ``stdout``) go to ``log``.
    ``os.wait4`` gives this child's own peak RSS."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as err, open(stdout or os.devnull, "w", encoding="utf-8") as out:
        child = subprocess.Popen(cmd, cwd=REPO, stdout=out if stdout else err, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        print("\n".join("   " + line for line in tail), file=sys.stderr)
        print(f"real_table: {Path(cmd[1]).name} failed (exit {child.returncode}): see {log}; run again to go on "
              f"from the last finished stage", file=sys.stderr)
        raise SystemExit(1)  # a failed stage, not bad input: exit 2 is kept for the one-line errors
    return Proc(time.perf_counter() - start, usage.ru_maxrss / 1024, log)


def say(text: str) -> None:
    print(f"{datetime.datetime.now():%H:%M:%S} {text}", flush=True)


def check_ready(model: Path) -> None:
    """PEFT importable and the model fetched: one ``error:`` line otherwise, before any work."""
    if importlib.util.find_spec("peft") is None:
        fail("HF PEFT is not installed: pip install -r requirements.lock (it pins peft)")
    if not (model / "config.json").is_file():
        fail(f"--model {model}: no model there; fetch it with `bash download_pretrained_checkpoints.sh {MODEL}`")


def write_subsets(data: Path, plan: Plan) -> dict[str, Path]:
    """train / valid / test formatted files from create_datasets.sh's E2E files (every record of a
    chosen MR, so every reference is kept)."""
    def pick(records: list[dict], contexts: list[str], out: Path) -> Path:
        keep = set(contexts)
        write_formatted([r for r in records if r["context"] in keep], out)
        return out

    valid = read_formatted(data / "valid_formatted.jsonl")
    test = read_formatted(data / "test_formatted.jsonl")
    mrs = list(dict.fromkeys(r["context"] for r in valid))
    test_mrs = list(dict.fromkeys(r["context"] for r in test))[::plan.test_every][:plan.test_contexts]
    end = plan.train_contexts + plan.valid_contexts
    if len(mrs) < end:
        fail(f"{data}/valid_formatted.jsonl has {len(mrs)} MRs, fewer than the plan's {end}")
    return {"train": pick(valid, mrs[:plan.train_contexts], data / "table_train_formatted.jsonl"),
            "valid": pick(valid, mrs[plan.train_contexts:end], data / "table_valid_formatted.jsonl"),
            "test": pick(test, test_mrs, data / "table_test_formatted.jsonl"),
            "test_unadapted": pick(test, test_mrs[:plan.unadapted_contexts], data / "table_test_unadapted_formatted.jsonl")}


def log_rows(folder: Path) -> list[dict]:
    path = folder / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def valid_loss_at(folder: Path, step: int) -> float | None:
    return next((r["loss"] for r in log_rows(folder) if r.get("split") == "valid" and r["step"] == step), None)


def step_seconds(log: Path) -> float:
    """Seconds per update between the first and last ``| step N`` lines of a training log (their clock
    stamps; validation and saves run after the last one)."""
    stamps = []
    for line in log.read_text(encoding="utf-8").splitlines():
        match = re.match(r"(\d\d):(\d\d):(\d\d) \| \| step\s+(\d+) /", line)
        if match:
            h, m, s, step = map(int, match.groups())
            stamps.append((step, h * 3600 + m * 60 + s))
    (first, t0), (last, t1) = stamps[0], stamps[-1]
    return ((t1 - t0) % 86400) / max(last - first, 1)


class Table:
    """The runs of one table, in ``out``."""

    def __init__(self, model: Path, out: Path, plan: Plan, rows: dict[str, Row]) -> None:
        self.model, self.out, self.plan, self.rows = model, out, plan, rows
        self.record: dict = {"rows": {}, "sweep": {}}

    def train(self, row: Row, lr: float, folder: Path, *, stop: int | None) -> Proc | None:
        """llama_ft.py for ``row`` at ``lr`` into ``folder`` (to ``stop`` updates, or resumed to the end);
        None when that part is already there."""
        plan, done = self.plan, log_rows(folder)
        target = stop or plan.steps
        if any(r.get("split") == "valid" and r["step"] == target for r in done):
            return None
        resume = ["--resume", str(folder)] if done and (folder / "resume.pt").is_file() else ["--overwrite"]
        stop_flags = ["--stop_at_step", str(stop)] if stop and stop < plan.steps else []
        cmd = [sys.executable, "src/llama_ft.py", "--model_name_or_path", str(self.model), "--bits", "32",
               "--dataset", str(self.files["train"]), "--eval_dataset", str(self.files["valid"]),
               "--eval_steps", str(plan.sweep_steps), "--target_modules", row.targets, *row.flags,
               "--per_device_train_batch_size", str(plan.batch), "--gradient_accumulation_steps", "1",
               "--max_steps", str(plan.steps), "--lr", str(lr), "--max_grad_norm", "0",
               "--logging_steps", str(plan.logging_steps), "--save_steps", str(plan.steps),
               "--output_dir", str(folder), *stop_flags, *resume]
        return run(cmd, self.out / "logs" / f"train-{folder.parent.name}-{folder.name}-{target}.log")

    def choose_lr(self, row: Row) -> tuple[float, Path]:
        """Sweep the row's candidates (or take ``lr_from``'s choice); the chosen rate and its run folder."""
        if row.lr_from is not None:
            lr = self.record["rows"][row.lr_from]["lr"]
            return lr, self.out / "runs" / row.name / f"lr{lr:g}"
        losses = {}
        for lr in row.lrs:
            folder = self.out / "runs" / row.name / f"lr{lr:g}"
            if len(row.lrs) > 1:
                self.train(row, lr, folder, stop=self.plan.sweep_steps)
            losses[lr] = valid_loss_at(folder, self.plan.sweep_steps) if len(row.lrs) > 1 else None
        lr = min(losses, key=lambda k: losses[k]) if len(row.lrs) > 1 else row.lrs[0]
        self.record["sweep"][row.name] = {f"{k:g}": v for k, v in losses.items()}
        say(f"{row.name}: validation loss after {self.plan.sweep_steps} updates {self.record['sweep'][row.name]} "
            f"-> lr {lr:g}")
        return lr, self.out / "runs" / row.name / f"lr{lr:g}"

    def decode_and_score(self, name: str, adapter: Path | None, data: Path) -> dict:
        folder = self.out / "decode" / name
        scores_file = folder / "scores.json"
        if not scores_file.is_file():
            flags = ["--adapter", str(adapter)] if adapter else []
            ref, pred = folder / "e2e_ref.txt", folder / "e2e_pred.txt"
            gen = run([sys.executable, "src/llama_beam.py", "--model_name_or_path", str(self.model), "--bits", "32",
                       *flags, "--data", str(data), *BEAM_FLAGS, "--output_ref_file", str(ref),
                       "--output_pred_file", str(pred)], self.out / "logs" / f"decode-{name}.log")
            run([sys.executable, "eval/e2e/measure_scores.py", str(ref), str(pred), "-p", "--json"],
                self.out / "logs" / f"score-{name}.log", stdout=folder / "scores.tmp")
            scores = json.loads((folder / "scores.tmp").read_text())["scores"]
            contexts = len(pred.read_text().splitlines())
            with atomic_open(scores_file) as handle:
                json.dump({"scores": scores, "decode_seconds": gen.seconds, "contexts": contexts}, handle)
            (folder / "scores.tmp").unlink()
        return json.loads(scores_file.read_text())

    def adapted(self, row: Row) -> None:
        lr, folder = self.choose_lr(row)
        proc = self.train(row, lr, folder, stop=None)
        entry = self.record["rows"].setdefault(row.name, {})
        train_log = self.out / "logs" / f"train-{row.name}-{folder.name}-{self.plan.steps}.log"  # as train() names it
        text = train_log.read_text(encoding="utf-8")
        params = int(re.search(r"([\d,]+) trainable parameters", text).group(1).replace(",", ""))
        entry.update(label=row.label, lr=lr, why=row.why, flags=list(row.flags), targets=row.targets,
                     trainable=params, adapter_bytes=sum((folder / f).stat().st_size for f in
                                                         ("adapter_config.json", "adapter_model.safetensors")),
                     valid_loss=valid_loss_at(folder, self.plan.steps), step_seconds=step_seconds(train_log))
        if proc is not None:
            entry["peak_mib"] = proc.peak_mib
            (folder / "peak_mib.txt").write_text(f"{proc.peak_mib:.0f}\n")
        else:
            entry["peak_mib"] = float((folder / "peak_mib.txt").read_text())
        say(f"{row.name}: lr {lr:g}, {params:,} trained, valid loss {entry['valid_loss']:.4f}, "
            f"{entry['step_seconds']:.2f} s/update")
        decoded = self.decode_and_score(row.name, folder, self.files["test"])
        entry.update(scores=decoded["scores"], decode_seconds=decoded["decode_seconds"], contexts=decoded["contexts"])
        say(f"{row.name}: " + ", ".join(f"{m} {decoded['scores'][m]:.4f}" for m in METRICS) +
            f" on {decoded['contexts']} MRs ({decoded['decode_seconds']:.0f} s)")

    def unadapted(self) -> None:
        decoded = self.decode_and_score("unadapted", None, self.files["test_unadapted"])
        self.record["rows"]["unadapted"] = {"label": "unadapted", "trainable": 0, "adapter_bytes": 0,
                                            "scores": decoded["scores"], "decode_seconds": decoded["decode_seconds"],
                                            "contexts": decoded["contexts"]}
        say("unadapted: " + ", ".join(f"{m} {decoded['scores'][m]:.4f}" for m in METRICS))

    def build(self, publish) -> dict:
        """Every row, then the unadapted model; ``publish(record)`` after each (a run cut short still
        leaves the rows it finished)."""
        start = time.perf_counter()
        data = self.out / "data"
        if not (data / "e2e" / "test_formatted.jsonl").is_file():
            run(["bash", "create_datasets.sh", str(self.out)], self.out / "logs" / "datasets.log")
        self.files = write_subsets(data / "e2e", self.plan)
        self.record.update(plan=dataclasses.asdict(self.plan), model=str(self.model), date=f"{datetime.date.today()}",
                           machine=machine(), versions=versions(), beam=list(BEAM_FLAGS))
        for name in self.plan.rows:
            self.adapted(self.rows[name])
            publish({**self.record, "wall_seconds": time.perf_counter() - start, "complete": False})
        self.unadapted()
        self.record.update(wall_seconds=time.perf_counter() - start, complete=True)
        publish(self.record)
        return self.record


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "peft")}


def markdown(record: dict) -> str:
    """The table as Markdown: one line per row, the scores on the adapted rows' MRs."""
    plan = record["plan"]
    head = ("| method | trained params | adapter bytes | lr | valid loss | " + " | ".join(METRICS) +
            " | s/update | peak MiB | MRs |")
    lines = [f"# NOLA vs LoRA and PEFT methods on SmolLM2-135M-Instruct, E2E ({record['date']})", "",
             f"Machine: {record['machine']}; torch {record['versions']['torch']}, transformers "
             f"{record['versions']['transformers']}, peft {record['versions']['peft']}. Whole run: "
             f"{record['wall_seconds'] / 60:.0f} min (`bash scripts/real_table.sh`)" +
             ("." if record["complete"] else ", still running: the rows so far."), "",
             f"Training: {plan['steps']} updates of {plan['batch']} examples (constant lr, AdamW), the first "
             f"{plan['train_contexts']} MRs of the E2E valid split; validation loss on the next "
             f"{plan['valid_contexts']}; lr chosen among each row's candidates by the validation loss after "
             f"{plan['sweep_steps']} updates. Scores: every {plan['test_every']}th distinct E2E test MR, beam 10, "
             f"length penalty 0.8, no-repeat 4, the official E2E metrics.", "", head,
             "|" + "---|" * (len(METRICS) + 8)]
    for name, row in record["rows"].items():
        s = row["scores"]
        loss = f"{row['valid_loss']:.4f}" if row.get("valid_loss") is not None else "–"
        lr = f"{row['lr']:g}" if "lr" in row else "–"
        secs = f"{row['step_seconds']:.2f}" if "step_seconds" in row else "–"
        peak = f"{row['peak_mib']:.0f}" if "peak_mib" in row else "–"
        lines.append(f"| {row['label']} | {row['trainable']:,} | {row['adapter_bytes']:,} | {lr} | {loss} | " +
                     " | ".join(f"{s[m]:.4f}" for m in METRICS) + f" | {secs} | {peak} | {row['contexts']} |")
    lines += ["", "Learning-rate sweep (validation loss after the sweep's updates):", ""]
    for name, losses in record["sweep"].items():
        lines.append(f"- {name}: " + ", ".join(f"lr {k}: {v:.4f}" if v is not None else f"lr {k}" for k, v in losses.items()))
    lines += ["", "Budgets:", ""] + [f"- {row['label']}: {row['why']}" for row in record["rows"].values() if row.get("why")]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("BLEU", "CIDEr")):
        for name, row in record["rows"].items():
            if row["trainable"]:
                ax.scatter(row["trainable"], row["scores"][metric])
                ax.annotate(row["label"], (row["trainable"], row["scores"][metric]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("trained parameters")
        ax.set_ylabel(f"E2E {metric}")
    fig.suptitle(f"SmolLM2-135M-Instruct on E2E ({record['date']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("TABLE_DIR", str(REPO / "table_run")),
                        help="work folder (default: $TABLE_DIR, else ./table_run)")
    parser.add_argument("--model", default=str(REPO / "pretrained_checkpoints" / MODEL),
                        help="the causal LM folder (default: the fetched SmolLM2-135M-Instruct)")
    parser.add_argument("--quick", action="store_true", help="three rows, a few updates and MRs (a smoke test)")
    parser.add_argument("--results", default=str(REPO / "results"),
                        help="where real_e2e.{md,json,png} go (a full run only)")
    args = parser.parse_args()
    model = Path(args.model).resolve()
    check_ready(model)
    check_writable(args.out, "--out", folder=True)
    out = Path(args.out).resolve()
    plan, rows = (QUICK, quick_rows()) if args.quick else (FULL, {r.name: r for r in ROWS})
    target = out if args.quick else Path(args.results)
    target.mkdir(parents=True, exist_ok=True)

    def publish(record: dict) -> None:
        with atomic_open(target / "real_e2e.json") as handle:
            json.dump(record, handle, indent=1)
        with atomic_open(target / "real_e2e.md") as handle:
            handle.write(markdown(record))
        plot(record, target / "real_e2e.png")

    record = Table(model, out, plan, rows).build(publish)
    print(markdown(record))
    say(f"wrote {target}/real_e2e.md, .json, .png in {record['wall_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    run_cli(main)
