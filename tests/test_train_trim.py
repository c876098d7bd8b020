"""Trimmed batches and the head at the loss positions only give the padded full-head numbers.

The reference is the original's computation, rebuilt here: every batch padded to ``--seq_len``,
the LM head and label-smoothed log-softmax at all positions, loralib's own ``nn.Dropout``, a
``.item()`` per step. The trainer under test runs through ``gpt2_ft.py``'s ``main``.
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import default_collate

from nola.gpt2.build import build_model
from nola.train.cli import config_from, launch_config, model_flags
from nola.config import OptimConfig, TrainConfig
from nola.gpt2.data import FTDataset, make_loader, trim_collate
from nola.train.distributed import seed_everything
from nola.gpt2.dropout import PaddedDropout
from nola.gpt2.model import lm_loss
from nola.train.optim import Schedule, make_optimizer
from src.gpt2_ft import build_parser, main

SEQ = 512  # the paper's --seq_len
STEPS = 20
OPT = ["--lr", "0.05", "--weight_decay", "0.01", "--correct_bias", "--adam_beta2", "0.999", "--scheduler", "linear",
       "--warmup_step", "5", "--label_smooth", "0.1", "--random_seed", "110"]
NOLA = ["--nola_rank", "8", "--nola_c", "1.0", "--nola_qv"]
ADAPTERS = {
    "NOLA materialised": NOLA + ["--nola_mode", "materialised"],
    "NOLA onthefly": NOLA + ["--nola_mode", "onthefly", "--nola_num_basis", "256"],
    "qNOLA 3-bit": NOLA + ["--qnola", "--qbits", "3"],
    "LoRA dropout 0.1": ["--lora_dim", "4", "--lora_alpha", "32", "--lora_dropout", "0.1"],
}


@pytest.fixture(scope="module")
def long_gpt2(tmp_path_factory) -> Path:
    """The tests' tiny random GPT-2 with room for 1024 positions, as GPT-2 has (--seq_len 512 fits)."""
    from scripts.tiny import save_random_gpt2

    return save_random_gpt2(tmp_path_factory.mktemp("gpt2_1024"), n_positions=1024)


@pytest.fixture(scope="module")
def valid_sample(e2e_data, tmp_path_factory) -> Path:
    """The first 12 lines of the E2E valid split (3 validation batches of 4)."""
    path = tmp_path_factory.mktemp("valid_sample") / "valid12.jsonl"
    path.write_text("".join((e2e_data / "valid.jsonl").read_text().splitlines(keepends=True)[:12]))
    return path


def test_trim_collate_is_the_padded_batch_cut_at_its_longest_sequence(e2e_data):
    """In the sampler's order, at the paper's length and at one that cuts sequences."""
    for seq_len in (SEQ, 40):
        data = FTDataset(e2e_data / "valid.jsonl", seq_len)
        loader = make_loader(data, 8, shuffle=True, seed=110, drop_last=True, collate_fn=trim_collate)
        loader.sampler.set_epoch(1)
        cut = 0
        for ids, trimmed in zip(list(loader.batch_sampler)[:40], loader):
            padded = default_collate([data[i] for i in ids])
            longest = max(min(len(data.contexts[i]) + len(data.completions[i]), seq_len) for i in ids)
            assert trimmed["id"].tolist() == ids and trimmed["input"].shape == (8, longest)
            for key in ("input", "target", "mask"):
                assert torch.equal(trimmed[key], padded[key][:, :longest])
            assert not padded["mask"][:, longest:].any() and not padded["input"][:, longest:].any()
            assert torch.equal(trimmed["positions"], padded["mask"][:, :longest].flatten().nonzero().squeeze(1))
            cut += longest == seq_len
        assert cut > 0 if seq_len == 40 else cut == 0


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", DEVICES)
def test_padded_dropout_draws_the_padded_mask_and_leaves_the_generator_where_nn_dropout_does(device):
    x = torch.randn(3, 16, 1024, device=device)
    torch.manual_seed(5)
    reference = nn.Dropout(0.1).train()(x)
    after = torch.rand(4, device=device)
    drop = PaddedDropout(0.1).train()
    drop.padded_len = 16
    torch.manual_seed(5)
    trimmed = drop(x[:, :11])
    assert torch.equal(trimmed, reference[:, :11]) and torch.equal(torch.rand(4, device=device), after)
    assert (trimmed == 0).any() and torch.equal(drop.eval()(x), x)


def _argv(base: Path, train: Path, valid: Path, adapter: list[str], device: str) -> list[str]:
    return ["--device", device, "--train_data", str(train), "--valid_data", str(valid), "--seq_len", str(SEQ),
            "--train_batch_size", "2", "--valid_batch_size", "4", "--model_card", str(base / "card.json"),
            "--init_checkpoint", str(base / "pytorch_model.bin"), "--platform", "local", "--threads", "1",
            "--max_step", str(STEPS), "--log_interval", "1", "--eval_interval", "1000",
            "--save_interval", "1000"] + OPT + adapter


def _padded_training(argv: list[str]) -> list[float]:
    """The original loop: padded batches, full-head lm_loss, loralib's nn.Dropout, .item() each step."""
    args = build_parser().parse_args(argv)
    launch, cfg, optim = launch_config(args), config_from(TrainConfig, args), config_from(OptimConfig, args)
    device = torch.device(launch.device)
    seed_everything(launch.random_seed)
    source, request = model_flags(args)
    model = build_model(source, device, request).model
    dropout = request.lora.get("dropout", 0.0)
    for module in model.modules():
        if hasattr(module, "lora_dropout") and dropout > 0:
            module.lora_dropout = nn.Dropout(dropout)
    data = FTDataset(cfg.train_data, cfg.seq_len)
    loader = make_loader(data, cfg.train_batch_size, shuffle=True, seed=launch.random_seed, drop_last=True)
    loader.sampler.set_epoch(1)
    optimizer = make_optimizer(model, optim)
    schedule = Schedule(optim.scheduler, optim.lr, optim.warmup_step, optim.max_step)
    model.train()
    losses = []
    for step, batch in enumerate(itertools.islice(loader, optim.max_step)):  # the iterator draws its seed
        batch = {k: v.to(device) for k, v in batch.items()}
        assert batch["input"].shape[1] == SEQ
        logits, _ = model(batch["input"])
        loss = lm_loss(logits, batch["target"], batch["mask"], cfg.label_smooth)
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@torch.no_grad()
def _padded_validation(model: nn.Module, path: Path, batch_size: int, device: str) -> tuple[float, float]:
    """The original's token-averaged validation loss over padded batches and the full head."""
    model.eval()
    data = FTDataset(path, SEQ)
    total, count = (torch.zeros((), dtype=torch.float64, device=device) for _ in range(2))
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        batch = {k: v.to(device) for k, v in default_collate(items).items()}
        logits, _ = model(batch["input"])
        nll = nn.functional.cross_entropy(logits.flatten(0, 1), batch["target"].flatten(), reduction="none")
        total += (nll * batch["mask"].flatten()).sum()
        count += batch["mask"].sum()
    loss = (total / count).item()
    return loss, math.exp(loss)


# On the fly equals materialised (test_layers), so on CPU that row runs with the slow checks only;
# on CUDA it is the default mode.
@pytest.mark.parametrize("device, name", [
    pytest.param("cpu", name, marks=[pytest.mark.slow] if "onthefly" in name else []) for name in ADAPTERS] + [
    pytest.param("cuda", name, marks=pytest.mark.cuda) for name in ADAPTERS])
def test_trimmed_training_and_validation_equal_the_padded_full_head(long_gpt2, e2e_data, valid_sample, tmp_path,
                                                                    one_thread, device, name):
    argv = _argv(long_gpt2, e2e_data / "valid.jsonl", valid_sample, ADAPTERS[name], device)
    work = tmp_path / "run"
    main(argv + ["--work_dir", str(work)])
    rows = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    trimmed = [r["loss"] for r in rows if r["split"] == "train"]
    padded = _padded_training(argv)
    assert len(trimmed) == len(padded) == STEPS
    worst = max(abs(a - b) / abs(b) for a, b in zip(trimmed, padded))
    assert worst <= 1e-6
    assert len(set(padded)) == STEPS  # each step a different batch and a different model
    # Validation at step 20 in the run, against the padded computation with the weights it saved.
    valid = next(r for r in rows if r["split"] == "valid")
    args = build_parser().parse_args(argv + ["--init_checkpoint", str(work / f"model.{STEPS}")])
    source, request = model_flags(args)
    saved = build_model(source, torch.device(device), request).model
    loss, ppl = _padded_validation(saved, valid_sample, 4, device)
    assert valid["loss"] == pytest.approx(loss, rel=1e-6)
    assert valid["ppl"] == pytest.approx(ppl, rel=1e-6 * loss)  # d(ppl)/ppl = d(loss): the same bound
