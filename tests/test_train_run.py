"""gpt2_ft.py end to end on a tiny random GPT-2 and the E2E valid split: the paper's command under
torch.distributed.launch, qNOLA and LoRA, 2 processes vs 1, resume, killed saves, bad input."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from src.gpt2_ft import main
from nola.gpt2.build import build_model
from nola.config import ModelSource
from nola.gpt2.data import FTDataset, make_loader, trim_collate
from nola.gpt2.checkpoint import adapter_tensors, read_checkpoint
from nola.errors import run_cli
from nola.fileio import sha256_file
from nola.hf_adapter import CONFIG_FILE, WEIGHTS_FILE
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "src" / "gpt2_ft.py")
SEQ = 48
NOLA = ["--nola_rank", "8", "--nola_c", "1.0", "--nola_qv"]
PAPER_OPT = ["--clip", "0.0", "--weight_decay", "0.0", "--correct_bias", "--adam_beta2", "0.999",
             "--label_smooth", "0.1", "--random_seed", "110"]


@pytest.fixture(scope="module")
def base(tiny_gpt2, tmp_path_factory) -> Path:
    """The tiny random GPT-2 with its tied embedding scaled x10 (std 0.2). With transformers' std
    0.02 the logits of a 32-dim model span under +-1, so no q/v adapter can move the loss by more
    than a few hundredths; the larger output layer gives the adapters something to learn."""
    state = torch.load(tiny_gpt2 / "pytorch_model.bin", weights_only=True)
    state["wte.weight"] = state["wte.weight"] * 10
    path = tmp_path_factory.mktemp("base") / "pytorch_model.bin"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def data(e2e_data, tmp_path_factory) -> dict[str, Path]:
    """train: the E2E valid split; valid: its first 32 lines; mixed: its first 48 lines (10 to 32
    scored tokens each at --seq_len 48; one epoch of 12 batches of 4); equal: 48 examples that all
    score the same number of completion tokens; small: 12 of those (6 batches of 2 an epoch)."""
    out = tmp_path_factory.mktemp("data")
    lines = (e2e_data / "valid.jsonl").read_text().splitlines(keepends=True)
    (out / "valid32.jsonl").write_text("".join(lines[:32]))
    (out / "mixed.jsonl").write_text("".join(lines[:48]))
    by_tokens = defaultdict(list)
    for line in lines:
        item = json.loads(line)
        by_tokens[min(len(item["completion"]), SEQ - len(item["context"]))].append(line)
    equal = max(by_tokens.values(), key=len)
    (out / "equal.jsonl").write_text("".join(equal[:48]))
    (out / "small.jsonl").write_text("".join(equal[:12]))
    return {"train": e2e_data / "valid.jsonl", "valid": out / "valid32.jsonl", "mixed": out / "mixed.jsonl",
            "equal": out / "equal.jsonl", "small": out / "small.jsonl"}


@pytest.fixture(autouse=True)
def keep_threads():
    """In-process runs set --threads 1 (2 shared cores: one busy thread beats two spinning ones); restore."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def common(tiny_gpt2, base, train, valid) -> list[str]:
    return ["--train_data", str(train), "--valid_data", str(valid), "--seq_len", str(SEQ), "--valid_batch_size", "16",
            "--model_card", str(tiny_gpt2 / "card.json"), "--init_checkpoint", str(base), "--platform", "local",
            "--threads", "1"]


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(args: list[str], nproc: int = 1, runner: str = "launch") -> subprocess.CompletedProcess:
    port = free_port()
    if runner == "launch":
        cmd = [sys.executable, "-m", "torch.distributed.launch", f"--nproc_per_node={nproc}", f"--master_port={port}"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-backend=c10d"]
    proc = subprocess.run(cmd + [SCRIPT] + args, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def rows(work_dir: Path, split: str) -> list[dict]:
    return [r for r in map(json.loads, (work_dir / "log.jsonl").read_text().splitlines()) if r["split"] == split]


def adapter(path: Path) -> dict[str, torch.Tensor]:
    return adapter_tensors(read_checkpoint(path))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_paper_command_under_torch_distributed_launch_lowers_validation_loss(tiny_gpt2, base, data, tmp_path):
    work = tmp_path / "e2e"
    args = common(tiny_gpt2, base, data["train"], data["valid"]) + PAPER_OPT + NOLA + [
        "--train_batch_size", "2", "--grad_acc", "1", "--lr", "0.1", "--scheduler", "linear", "--warmup_step", "20",
        "--max_epoch", "5", "--max_step", "200", "--save_interval", "100", "--log_interval", "50",
        "--eval_interval", "50", "--work_dir", str(work)]
    proc = launch(args)
    valid = rows(work, "valid")
    assert [r["step"] for r in valid] == [50, 100, 150, 200]
    assert valid[-1]["loss"] < valid[0]["loss"] - 0.02
    train = rows(work, "train")
    assert [r["step"] for r in train] == [50, 100, 150, 200]
    assert set(train[0]) == {"step", "lr", "loss", "avg_loss", "ppl", "ms_per_batch", "split"}
    assert train[0]["lr"] == pytest.approx(0.1 * (200 - 49) / 180)
    assert sorted(p.name for p in work.glob("model.*")) == ["model.100", "model.200"]
    # The adapter folder: coefficients, seeds, adapter config and base identity, nothing else.
    assert sorted(p.name for p in (work / "model.200").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    header = json.loads((work / "model.200" / CONFIG_FILE).read_text())
    assert header["roles"]["attn_q"]["seeds"]["A"] and header["step"] == 200
    ckpt = read_checkpoint(work / "model.200")
    assert set(ckpt["tensors"]) == {f"nola.{r}.{c}" for r in ("attn_q", "attn_v") for c in ("alpha", "beta")}
    assert ckpt["base"] == {"path": str(base), "sha256": sha256_file(base)}
    assert ckpt["config"]["num_basis"] == 1000
    resume = torch.load(work / "resume.pt", weights_only=True)
    assert all(resume[k] == ckpt[k] for k in ("version", "adapter", "config", "model_config", "base"))
    size = sum(p.stat().st_size for p in (work / "model.200").iterdir())
    assert f"saved {work / 'model.200'}: {size:,} bytes" in proc.stderr
    assert f"adapter folder model.<step>/: about {size:,} bytes" in proc.stderr
    assert "trainable parameters: 8,000 (NOLA r=8, k=l=1000" in proc.stderr
    assert "it/s" not in proc.stderr  # no progress bar off a terminal
    # gpt2_beam.py's path: the model rebuilt from the adapter file alone.
    rebuilt = build_model(ModelSource(model_card=str(tiny_gpt2 / "card.json"),
                                      init_checkpoint=str(work / "model.200")), torch.device("cpu"))
    assert rebuilt.step == 200 and rebuilt.model.nola_config.rank == 8


@pytest.mark.parametrize("name, flags", [
    ("qNOLA 3-bit", NOLA + ["--qnola", "--qbits", "3", "--lr", "0.1"]),
    ("LoRA r=4", ["--lora_dim", "4", "--lora_alpha", "32", "--lora_dropout", "0.1", "--lr", "0.01"]),
])
def test_qnola_and_lora_lower_validation_loss(tiny_gpt2, base, data, tmp_path, name, flags):
    work = tmp_path / "run"
    main(common(tiny_gpt2, base, data["train"], data["valid"]) + PAPER_OPT + flags + [
        "--train_batch_size", "2", "--scheduler", "linear", "--warmup_step", "10", "--max_step", "150",
        "--save_interval", "1000", "--log_interval", "50", "--eval_interval", "50", "--work_dir", str(work)])
    valid = rows(work, "valid")
    assert valid[-1]["loss"] < valid[0]["loss"] - 0.02
    ckpt, stored = read_checkpoint(work / "model.150"), load_file(work / "model.150" / WEIGHTS_FILE)
    if "--qnola" in flags:  # 2 roles x (alpha, beta) x 2 layers x 1000 coefficients, 3 bits each
        assert sorted(stored) == ["codes", "scale"] and ckpt["config"]["qbits"] == 3
        assert stored["codes"].dtype == torch.uint8 and stored["codes"].numel() == 2 * 2 * 2 * 1000 * 3 // 8
    else:
        assert all("lora_" in k for k in stored) and ckpt["config"]["dim"] == 4


def test_two_ranks_micro_batches_are_the_one_process_batch_and_score_different_token_counts(data):
    """DistributedSampler gives rank r the entries perm[r::2] of the permutation one process walks, so
    step k's batch of 2 on rank r holds perm[4k + r] and perm[4k + 2 + r]: rank 0's and rank 1's
    examples interleaved are step k's batch of 4 in one process, in its order. On the real lines the
    two ranks score different token counts, so the mean of per-rank token means (what the original's
    DDP averages) is not the batch's token mean: the test below can tell the two rules apart."""
    dataset = FTDataset(data["mixed"], SEQ)
    loaders = [make_loader(dataset, batch_size, shuffle=True, seed=3, rank=rank, world_size=world, drop_last=True,
                           collate_fn=trim_collate) for batch_size, rank, world in ((4, 0, 1), (2, 0, 2), (2, 1, 2))]
    for loader in loaders:
        loader.sampler.set_epoch(1)
    steps = list(zip(*loaders))
    assert len(steps) == 12
    uneven = 0
    for one, rank0, rank1 in steps:
        assert one["id"].tolist() == [i for pair in zip(rank0["id"].tolist(), rank1["id"].tolist()) for i in pair]
        uneven += rank0["mask"].sum().item() != rank1["mask"].sum().item()
    assert uneven >= 9


@pytest.mark.parametrize("device, grad_acc", [("cpu", 1), ("cpu", 2),
                                              pytest.param("cuda", 1, marks=pytest.mark.cuda(gpus=2))])
def test_two_processes_equal_one_with_twice_the_batch(tiny_gpt2, base, data, tmp_path, device, grad_acc):
    """Real E2E lines of different lengths, 12 steps (one epoch). Each micro-step's loss is divided by
    its token count over both ranks, so 2 processes x batch 2 compute the loss and gradient of 1 x
    batch 4 (with --grad_acc, micro-step by micro-step, as one process averages its micro-batches):
    the parameters and the logged losses agree to float rounding. On CUDA: two GPUs talking NCCL."""
    args = ["--device", device] + common(tiny_gpt2, base, data["mixed"], data["valid"]) + NOLA + [
        "--nola_num_basis", "64", "--lr", "0.05", "--weight_decay", "0.01", "--correct_bias", "--adam_beta2", "0.999",
        "--scheduler", "constant", "--label_smooth", "0.1", "--max_step", "12", "--save_interval", "12",
        "--log_interval", "4", "--eval_interval", "100", "--random_seed", "3", "--grad_acc", str(grad_acc)]
    launch(args + ["--train_batch_size", "2", "--work_dir", str(tmp_path / "two")], nproc=2)
    main(args + ["--train_batch_size", "4", "--work_dir", str(tmp_path / "one")])
    two, one = adapter(tmp_path / "two" / "model.12"), adapter(tmp_path / "one" / "model.12")
    moved = max((t - 1 / 64).abs().max().item() for t in one.values())
    assert moved > 0.1 and max_diff(two, one) <= 1e-6
    # The logged losses are the all-rank token means one process logs.
    for row_two, row_one in zip(rows(tmp_path / "two", "train"), rows(tmp_path / "one", "train"), strict=True):
        assert row_two["loss"] == pytest.approx(row_one["loss"], rel=1e-6)
        assert row_two["avg_loss"] == pytest.approx(row_one["avg_loss"], rel=1e-6)
    # Both ranks saw their shard: the 2-process validation averages the same 32 examples.
    valid_two, valid_one = rows(tmp_path / "two", "valid")[-1], rows(tmp_path / "one", "valid")[-1]
    assert valid_two["loss"] == pytest.approx(valid_one["loss"], abs=1e-4)


def test_resume_reaches_the_uninterrupted_weights(tiny_gpt2, base, data, tmp_path):
    """10 steps (6 batches an epoch, grad_acc 2, LoRA dropout, linear warm-up and decay) in one go,
    vs stopped at step 4 under torchrun and resumed: the same weights, across the epoch boundary.
    Step 4 also validates (its loader's RNG draw must be in resume.pt), as does step 8 after it."""
    args = common(tiny_gpt2, base, data["small"], data["valid"]) + [
        "--lora_dim", "4", "--lora_alpha", "32", "--lora_dropout", "0.1", "--lr", "0.01", "--weight_decay", "0.01",
        "--correct_bias", "--scheduler", "linear", "--warmup_step", "3", "--max_step", "10", "--grad_acc", "2",
        "--train_batch_size", "2", "--save_interval", "3", "--log_interval", "3", "--eval_interval", "4",
        "--label_smooth", "0.1", "--random_seed", "3"]
    main(args + ["--work_dir", str(tmp_path / "whole")])
    launch(args + ["--work_dir", str(tmp_path / "split"), "--stop_at_step", "4"], runner="torchrun")
    state = torch.load(tmp_path / "split" / "resume.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["batch"]) == (4, 1, 4)
    assert not (tmp_path / "split" / "model.6").exists()
    main(args + ["--resume", str(tmp_path / "split")])  # --work_dir defaults to the resumed folder
    for step in (6, 9, 10):
        name = f"model.{step}"
        delta = max_diff(adapter(tmp_path / "whole" / name), adapter(tmp_path / "split" / name))
        assert delta <= 1e-6, (step, delta)
    assert [r["step"] for r in rows(tmp_path / "split", "valid")] == [4, 6, 8, 10]


def test_resume_mid_accumulation_without_init_checkpoint_is_bit_identical(tiny_gpt2, base, data, tmp_path):
    """--grad_acc 4, 6 batches an epoch: the run stopped at step 3 (three batches into an update) and
    resumed without --init_checkpoint (resume.pt names the base, checked by SHA-256) writes the same
    adapter files, bit for bit, as the uninterrupted run, across the epoch end at step 6 (also
    mid-update). resume.pt carries the gradient accumulated so far."""
    args = common(tiny_gpt2, base, data["small"], data["valid"]) + NOLA + [
        "--nola_num_basis", "64", "--lr", "0.05", "--scheduler", "linear", "--warmup_step", "2", "--max_step", "8",
        "--grad_acc", "4", "--train_batch_size", "2", "--save_interval", "3", "--log_interval", "2",
        "--eval_interval", "100", "--label_smooth", "0.1", "--random_seed", "3"]
    main(args + ["--work_dir", str(tmp_path / "whole")])
    main(args + ["--work_dir", str(tmp_path / "split"), "--stop_at_step", "3"])
    assert sorted(read_checkpoint(tmp_path / "split" / "resume.pt")["grad"][0]) == sorted(adapter(tmp_path / "whole" / "model.8"))
    at = args.index("--init_checkpoint")
    main(args[:at] + args[at + 2:] + ["--resume", str(tmp_path / "split")])
    for step in (6, 8):
        whole, split = (adapter(tmp_path / run / f"model.{step}") for run in ("whole", "split"))
        assert all(torch.equal(whole[k], split[k]) for k in whole), step
    assert rows(tmp_path / "split", "valid") == rows(tmp_path / "whole", "valid")


KILLER = """
import io, os, runpy, signal, sys
import torch
real_save = torch.save

def dying_save(obj, handle, *args, **kwargs):
    # Die (SIGKILL, no cleanup) halfway through writing resume.pt at step 8.
    if isinstance(obj, dict) and obj.get("format") == "nola-resume" and obj.get("step") == 8:
        buffer = io.BytesIO()
        real_save(obj, buffer)
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, handle, *args, **kwargs)

torch.save = dying_save
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def test_a_save_killed_mid_write_leaves_the_previous_checkpoint_intact(tiny_gpt2, base, data, tmp_path):
    work = tmp_path / "run"
    args = common(tiny_gpt2, base, data["equal"], data["valid"]) + NOLA + [
        "--nola_num_basis", "64", "--lr", "0.05", "--max_step", "12", "--save_interval", "4", "--log_interval", "4",
        "--eval_interval", "100", "--train_batch_size", "4", "--work_dir", str(work)]
    driver = tmp_path / "killer.py"
    driver.write_text(KILLER.format(script=str(REPO / "src" / "gpt2_ft.py")))
    proc = subprocess.run([sys.executable, str(driver)] + args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    leftovers = list(work.glob(".resume.pt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the half-written temp file
    state = torch.load(work / "resume.pt", weights_only=True)  # the previous one, whole
    assert state["step"] == 4
    assert read_checkpoint(work / "model.4")["step"] == 4 and read_checkpoint(work / "model.8")["step"] == 8
    main(args + ["--resume", str(work)])  # saves step 8 again, over the killed run's model.8/
    assert read_checkpoint(work / "model.12")["step"] == 12 and read_checkpoint(work / "model.8")["step"] == 8
    assert [r["step"] for r in rows(work, "train")] == [4, 8, 12]  # the killed run's row 8 was dropped


FOLDER_KILLER = """
import os, runpy, signal, sys
import nola.hf_adapter
real_open = nola.hf_adapter.atomic_open

def dying_open(path, *args, **kwargs):
    # Die (SIGKILL) as the adapter folder of step 8 gets its config, its weights file already written.
    if path.name == nola.hf_adapter.CONFIG_FILE and path.parent.name.startswith(".model.8.") \\
            and str(path.parent.parent) == {work!r}:  # not the size estimate's folder at the start
        os.kill(os.getpid(), signal.SIGKILL)
    return real_open(path, *args, **kwargs)

nola.hf_adapter.atomic_open = dying_open
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def test_an_adapter_folder_killed_mid_save_is_never_half_there(tiny_gpt2, base, data, tmp_path):
    """The folder is built beside its name and renamed: a save killed inside leaves a hidden temp
    folder, which the resumed run removes, and no model.8/ until step 8 is saved again."""
    work = tmp_path / "run"
    args = common(tiny_gpt2, base, data["equal"], data["valid"]) + NOLA + [
        "--nola_num_basis", "64", "--lr", "0.05", "--max_step", "8", "--save_interval", "4", "--log_interval", "4",
        "--eval_interval", "100", "--train_batch_size", "4", "--work_dir", str(work)]
    driver = tmp_path / "killer.py"
    driver.write_text(FOLDER_KILLER.format(script=str(REPO / "src" / "gpt2_ft.py"), work=str(work)))
    proc = subprocess.run([sys.executable, str(driver)] + args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    leftovers = [p for p in work.iterdir() if p.name.startswith(".model.8.")]
    assert len(leftovers) == 1 and [p.name for p in leftovers[0].iterdir()] == [WEIGHTS_FILE]
    assert sorted(p.name for p in work.glob("model.*")) == ["model.4"]
    main(args + ["--resume", str(work)])
    assert not any(p.name.startswith(".model.") for p in work.iterdir())
    assert sorted(p.name for p in work.glob("model.*")) == ["model.4", "model.8"]
    assert read_checkpoint(work / "model.8")["step"] == 8


def test_save_full_jlm_and_cpu_mixed_precision(tiny_gpt2, base, data, tmp_path):
    work = tmp_path / "full"
    main(common(tiny_gpt2, base, data["equal"], data["valid"]) + NOLA + [
        "--nola_num_basis", "64", "--lr", "0.05", "--max_step", "3", "--save_interval", "3", "--train_batch_size", "4",
        "--save_full", "--fp16", "--obj", "jlm", "--work_dir", str(work)])
    ckpt = read_checkpoint(work / "model.3.pt")
    assert "transformer.wte.weight" in ckpt["model_state_dict"] and ckpt["adapter"] == "nola"
    assert not (work / "model.3").exists()
    assert rows(work, "valid")[-1]["loss"] < 20


def _fails(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_input_is_one_line_and_exit_2_before_any_work(tiny_gpt2, base, data, tmp_path, capsys):
    work = tmp_path / "never"
    ok = common(tiny_gpt2, base, data["equal"], data["valid"]) + ["--max_step", "4", "--work_dir", str(work)]
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(base.read_bytes()[:5000])
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text('{"context": [1, 2], "completion": [3]}\n{"context": [1, \n')
    wide_card = tmp_path / "card.json"
    wide_card.write_text(json.dumps({"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256}))
    cases = {
        "missing.jsonl": ok + NOLA + ["--train_data", str(tmp_path / "missing.jsonl")],
        "corrupt.jsonl:2: not valid JSON": ok + NOLA + ["--valid_data", str(corrupt)],
        "truncated": ok + NOLA + ["--init_checkpoint", str(truncated)],
        "--model_card this checkpoint": ok + NOLA + ["--model_card", str(wide_card)],
        "--qbits 9: must be in [2, 8]": ok + NOLA + ["--qnola", "--qbits", "9"],
        "--nola_num_basis 0: must be a number >= 1": ok + NOLA + ["--nola_num_basis", "0"],
        "cannot be combined": ok + NOLA + ["--lora_dim", "4"],
        "--fp16 and --bf16": ok + NOLA + ["--fp16", "--bf16"],
        "no resume.pt": ok + NOLA + ["--resume", str(tmp_path)],
    }
    for needle, argv in cases.items():
        assert needle in _fails(argv, capsys), needle
    assert not work.exists()
    # Flags that disagree with the run being resumed.
    run = tmp_path / "run"
    main(ok + NOLA + ["--nola_num_basis", "64", "--train_batch_size", "4", "--save_interval", "1",
                      "--stop_at_step", "1", "--work_dir", str(run)])
    capsys.readouterr()
    again = ok + ["--work_dir", str(run), "--resume", str(run), "--train_batch_size", "4"]
    assert "--nola_rank 4 contradicts" in _fails(again + ["--nola_rank", "4", "--nola_qv"], capsys)
    assert "LoRA" in _fails(again + ["--lora_dim", "4"], capsys)
    assert "--train_batch_size 8 differs" in _fails(again + ["--train_batch_size", "8"], capsys)
    assert read_checkpoint(run / "resume.pt")["step"] == 1


def test_exit_status_2_from_the_script(tiny_gpt2, base, data):
    argv = common(tiny_gpt2, base, data["equal"], data["valid"]) + NOLA + ["--max_step", "2", "--qnola", "--qbits", "1"]
    proc = subprocess.run([sys.executable, SCRIPT] + argv, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: --qbits 1: must be in [2, 8]"
