"""Train LoRA side by side with microsoft/LoRA's own ``examples/NLG`` code on CPU and compare the
LoRA tensors at every checkpoint: the check behind the README's "LoRA trajectory" row.

    python scripts/compare_lora_trajectory.py --lora_src PATH/TO/microsoft-LoRA/examples/NLG/src

Both runs use the same tiny random GPT-2 (2 layers x 32, GPT-2's vocabulary and 1024 positions, as
the original's config fixes), the first 400 E2E valid examples of ``$NOLA_DATA_MIRROR`` for
training and the next 32 for validation, and microsoft/LoRA's E2E LoRA flags and seed with a short
schedule. The original runs unchanged except: gloo instead of NCCL, CPU instead of CUDA (no
``.cuda()``, no ``device_ids``), and its ``gpt2.sm`` card given the tiny model's sizes.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from nola.checkpoint import adapter_tensors, read_checkpoint  # noqa: E402
from nola.errors import fail, run_cli  # noqa: E402
from nola.formats import convert  # noqa: E402
from nola.tiny import save_random_gpt2  # noqa: E402
from nola.tokenizer import encode_file  # noqa: E402

STEPS, SAVE = 60, 10
FLAGS = ["--train_batch_size", "8", "--grad_acc", "1", "--valid_batch_size", "4", "--seq_len", "64",
         "--platform", "local", "--clip", "0.0", "--lr", "0.002", "--weight_decay", "0.01", "--correct_bias",
         "--adam_beta2", "0.999", "--scheduler", "linear", "--warmup_step", "10", "--max_step", str(STEPS),
         "--save_interval", str(SAVE), "--eval_interval", "20", "--log_interval", "10", "--lora_dim", "4",
         "--lora_alpha", "32", "--lora_dropout", "0.1", "--label_smooth", "0.1", "--random_seed", "110"]
# (file, text in the original, replacement): the CPU port, nothing else.
PATCHES = [
    ("gpu.py", "dist.init_process_group(backend='nccl')\n        local_rank = torch.distributed.get_rank()\n"
               "        torch.cuda.set_device(local_rank)\n        device = torch.device('cuda', local_rank)",
     "dist.init_process_group(backend='gloo')\n        local_rank = torch.distributed.get_rank()\n"
     "        device = torch.device('cpu')"),
    ("gpu.py", "device_ids=[args.local_rank], output_device=args.local_rank", "device_ids=None, output_device=None"),
    ("gpt2_ft.py", "    lm_net = lm_net.cuda()\n", ""),
    ("gpt2_ft.py", "n_embd=768, n_layer=12, n_head=12", "n_embd=32, n_layer=2, n_head=4"),
]


def _port_original(src: Path, dst: Path) -> None:
    if not (src / "gpt2_ft.py").is_file():
        fail(f"--lora_src {src}: no gpt2_ft.py there; pass microsoft/LoRA's examples/NLG/src folder")
    shutil.copytree(src, dst, dirs_exist_ok=True)
    for name, old, new in PATCHES:
        path = dst / name
        text = path.read_text(encoding="utf-8")
        if old not in text:
            fail(f"--lora_src {src}: {name} differs from commit c4593f0 (no {old.splitlines()[0].strip()!r})")
        path.write_text(text.replace(old, new), encoding="utf-8")


def _data(out: Path) -> tuple[Path, Path]:
    mirror = Path(os.environ.get("NOLA_DATA_MIRROR", REPO.parent / "shared"))
    convert("e2e", mirror / "data/e2e/valid.txt", out / "valid_formatted.jsonl")
    encode_file(out / "valid_formatted.jsonl", out / "all.jsonl", mirror / "vocab")
    lines = (out / "all.jsonl").read_text().splitlines(keepends=True)
    (out / "train.jsonl").write_text("".join(lines[:400]))
    (out / "valid.jsonl").write_text("".join(lines[400:432]))
    return out / "train.jsonl", out / "valid.jsonl"


def _run(cmd: list[str], cwd: Path, log: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    with open(log, "w") as handle:
        if subprocess.run(cmd, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode:
            fail(f"{' '.join(cmd[:4])} ... failed; see {log}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lora_src", required=True, help="microsoft/LoRA's examples/NLG/src folder (commit c4593f0)")
    parser.add_argument("--out", default="lora_trajectory", help="work folder")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    _port_original(Path(args.lora_src).resolve(), out / "original_src")
    base = save_random_gpt2(out / "base", n_embd=32, n_layer=2, n_head=4, n_positions=1024)
    train, valid = _data(out)
    common = FLAGS + ["--train_data", str(train), "--valid_data", str(valid),
                      "--init_checkpoint", str(base / "pytorch_model.bin")]
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--rdzv-backend=c10d",
          f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "gpt2_ft.py", *common, "--model_card", "gpt2.sm",
          "--work_dir", str(out / "original")], out / "original_src", out / "original.log")
    _run([sys.executable, str(REPO / "src/gpt2_ft.py"), *common, "--model_card", str(base / "card.json"),
          "--threads", "1", "--work_dir", str(out / "ours")], REPO, out / "ours.log")

    print(f"{datetime.date.today()}, {platform.node()} ({platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}: LoRA tensors, this code vs microsoft/LoRA, {STEPS} steps (epoch of 50)")
    print("| step | max abs diff | max relative diff (Frobenius, per tensor) | bit-identical |")
    print("|---:|---:|---:|:---:|")
    for step in range(SAVE, STEPS + 1, SAVE):
        theirs = torch.load(out / "original" / f"model.{step}.pt", weights_only=True)["model_state_dict"]
        theirs = {k.removeprefix("module."): v for k, v in theirs.items() if "lora_" in k}
        ours = adapter_tensors(read_checkpoint(out / "ours" / f"model.{step}.pt"))
        if set(ours) != set(theirs):
            fail(f"step {step}: tensor names differ: {sorted(set(ours) ^ set(theirs))}")
        diff = max((ours[k] - theirs[k]).abs().max().item() for k in ours)
        rel = max(((ours[k] - theirs[k]).norm() / theirs[k].norm()).item() for k in ours)
        same = all(torch.equal(ours[k], theirs[k]) for k in ours)
        print(f"| {step} | {diff:.2e} | {rel:.2e} | {'yes' if same else 'no'} |")


if __name__ == "__main__":
    run_cli(main)
