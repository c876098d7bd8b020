"""Optimiser, schedules, objective masks and adapter sizes of the training script, against closed
forms, torch.optim.AdamW and files actually written."""
from __future__ import annotations

import math

import pytest
import torch

from src.gpt2_ft import build_parser
from nola.gpt2.checkpoint import save_checkpoint
from nola.gpt2.data import FTDataset
from nola.errors import UsageError
from nola.train.cli import config_from
from nola.config import LoRAConfig, NOLAConfig, OptimConfig
from nola.gpt2.model import GPT2Config, GPT2LMModel
from nola.train.optim import AdamW, Schedule, cycle_knots
from nola.gpt2.sizes import adapter_file_bytes, paper_sizes
from nola.gpt2.dataset import JointLM
from nola.gpt2.train import default_max_step

REQUIRED = ["--train_data", "t.jsonl", "--valid_data", "v.jsonl"]


def parse(*argv: str) -> OptimConfig:
    """The optimiser config as gpt2_ft.py builds it from these flags."""
    return config_from(OptimConfig, build_parser().parse_args(REQUIRED + list(argv)))


def test_adamw_with_bias_correction_equals_torch_adamw_when_eps_and_decay_vanish():
    torch.manual_seed(0)
    start = torch.randn(5, 7)
    ours, ref = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    opt = AdamW([ours], lr=0.01, betas=(0.9, 0.999), eps=0.0, weight_decay=0.0, correct_bias=True)
    ref_opt = torch.optim.AdamW([ref], lr=0.01, betas=(0.9, 0.999), eps=0.0, weight_decay=0.0)
    for _ in range(6):
        grad = torch.randn(5, 7)
        ours.grad, ref.grad = grad.clone(), grad.clone()
        opt.step()
        ref_opt.step()
    assert torch.allclose(ours, ref, atol=1e-6)
    assert not torch.allclose(ours, start, atol=1e-3)


def test_adamw_without_bias_correction_follows_the_original_update_order():
    # One step by hand: m = (1-b1) g, v = (1-b2) g^2, p -= lr m / (sqrt(v) + eps), then p -= lr wd p.
    lr, b1, b2, eps, wd = 0.1, 0.9, 0.98, 1e-6, 0.01
    p0, g = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, -0.1, 2.0])
    param = torch.nn.Parameter(p0.clone())
    param.grad = g.clone()
    AdamW([param], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, correct_bias=False).step()
    stepped = p0 - lr * (1 - b1) * g / ((1 - b2) ** 0.5 * g.abs() + eps)
    assert torch.allclose(param.detach(), stepped * (1 - lr * wd), atol=1e-7)
    # Without correction the first step is (1-b1)/sqrt(1-b2) ~ 0.71 of the corrected one.
    corrected = torch.nn.Parameter(p0.clone())
    corrected.grad = g.clone()
    AdamW([corrected], lr=lr, betas=(b1, b2), eps=0.0, correct_bias=True).step()
    assert torch.allclose(corrected.detach(), p0 - lr * g.sign(), atol=1e-6)


def test_schedules_match_the_original_formulas():
    linear = Schedule("linear", 0.1, warmup=10, max_step=110)
    assert linear.lr_at(0) == 0.0 and linear.lr_at(5) == pytest.approx(0.05)
    assert linear.lr_at(10) == pytest.approx(0.1) and linear.lr_at(60) == pytest.approx(0.05)
    assert linear.lr_at(110) == 0.0 and linear.lr_at(200) == 0.0
    cosine = Schedule("cosine", 0.2, warmup=4, max_step=100)
    assert cosine.lr_at(2) == pytest.approx(0.1)
    assert cosine.lr_at(50) == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cosine.lr_at(100) == pytest.approx(0.0, abs=1e-12) and cosine.lr_at(150) == pytest.approx(0.0, abs=1e-12)
    constant = Schedule("constant", 0.3, warmup=3, max_step=10)
    assert [constant.lr_at(s) for s in (0, 1, 3, 50)] == pytest.approx([0.0, 0.1, 0.3, 0.3])
    knots = cycle_knots("0,10,30", "0.0,1.0,0.5")
    cycle = Schedule("cycle", 123.0, warmup=0, max_step=30, knots=knots)
    assert [cycle.lr_at(s) for s in (0, 5, 10, 20, 30, 99)] == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.5])


def test_cycle_lists_are_checked():
    with pytest.raises(UsageError, match="--i_lrs"):
        cycle_knots("0,10", "0.1")
    with pytest.raises(UsageError, match="increasing"):
        cycle_knots("10,5", "0.1,0.2")


def test_microsoft_flag_spellings_and_default_max_step():
    args = parse("--adam_epislon", "1e-8", "--max_epoch", "5")
    assert args.adam_epsilon == 1e-8
    assert parse("--adam_epsilon", "3e-7", "--max_epoch", "1").adam_epsilon == 3e-7
    # ceil(max_epoch * ceil(N / batch) / world): 42061 E2E training examples, batch 8.
    assert default_max_step(args, 8, 42061, 1) == 5 * 5258
    assert default_max_step(args, 8, 42061, 2) == (5 * 5258 + 1) // 2
    assert default_max_step(parse("--max_step", "7", "--max_epoch", "5"), 8, 42061, 1) == 7
    assert default_max_step(parse("--scheduler", "cycle", "--i_steps", "0,40", "--i_lrs", "0,1"), 8, 100, 1) == 40


def test_joint_lm_mask_covers_context_and_completion(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"context": [5, 6, 7], "completion": [8, 9]}\n'
                    '{"context": [1, 2, 3, 4, 5, 6], "completion": [7, 8, 9]}\n')
    ds = FTDataset(path, seq_len=8)
    clm, jlm = ds[0]["mask"].tolist(), JointLM(ds)[0]["mask"].tolist()
    # targets 6 7 8 9 0 ...: clm scores only 8 and 9; jlm every real target.
    assert clm == [0, 0, 1, 1, 0, 0, 0, 0] and jlm == [1, 1, 1, 1, 0, 0, 0, 0]
    assert JointLM(ds)[1]["mask"].tolist() == [1] * 7 + [0]  # 9 tokens cut to 8 -> 7 targets


@pytest.mark.parametrize("adapter", [NOLAConfig(rank=4, num_basis=300, qv=True), NOLAConfig(rank=4, num_basis=300, qv=True, qbits=3),
                                     LoRAConfig(dim=2, alpha=16.0)])
def test_adapter_size_estimate_equals_a_real_folder(tmp_path, adapter):
    cfg = GPT2Config(vocab_size=1000, n_positions=64, n_embd=32, n_layer=3, n_head=4)
    real = GPT2LMModel(cfg, nola=adapter if isinstance(adapter, NOLAConfig) else None,
                       lora=adapter if isinstance(adapter, LoRAConfig) else None)
    with torch.no_grad():
        for p in real.parameters():
            if p.requires_grad:
                p.normal_()
    base, sha = "./pretrained_checkpoints/x.bin", "ab" * 32
    _, written = save_checkpoint(real, tmp_path, base, sha, 500)
    assert adapter_file_bytes(cfg, adapter, base, sha, step=500)[0] == written


def test_gpt2_medium_paper_sizes():
    rows = {name: (params, size) for name, params, size in paper_sizes("gpt2.md")}
    assert rows["NOLA r=8 k=l=1000 fp32"][0] == 24 * 2 * 2 * 1000
    assert rows["LoRA r=4 fp32"][0] == 24 * (2 * 4 * 1024 + 2 * 1024 * 4)
    assert 4 * 96_000 < rows["NOLA r=8 k=l=1000 fp32"][1] < 4 * 96_000 + 8192
    assert 96_000 * 3 / 8 < rows["NOLA r=8 k=l=1000 3-bit"][1] < 96_000 * 3 / 8 + 8192
    assert rows["NOLA r=8 k=l=1000 3-bit"][1] < rows["NOLA r=8 k=l=1000 4-bit"][1] < rows["LoRA r=1 fp32"][1]
    # 48 tensors (A and B per layer), a safetensors header entry and a JSON header line each: ~1% overhead.
    assert 4 * 393_216 < rows["LoRA r=4 fp32"][1] < 4 * 393_216 * 1.02
