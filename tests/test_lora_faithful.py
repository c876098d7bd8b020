"""The LoRA baseline starts where microsoft/LoRA's ``examples/NLG`` starts: the same LoRA tensors in
every layer and the same global RNG state at the first forward (so the same dropout masks), for
its E2E command and seed. The reference is rebuilt here from that repository's construction: one
block (loralib's MergedLinear on q and v, Conv1D weights drawn N(0, 0.02), TF-style LayerNorms with
no draws) deep-copied for every layer, the tied ``lm_head`` Linear, ``apply(_init_weights)`` (N(0,
0.02) for every nn.Linear / nn.Embedding weight, Linear biases zeroed), ``load_weight`` when a
checkpoint is given (its ``set_tied`` creates the head's Linear anew), then the training DataLoader
(DistributedSampler, seed, drop_last) whose epoch-1 iterator is created."""
from __future__ import annotations

import copy
import json

import loralib
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from nola.gpt2.model import GPT2Model
from src.gpt2_ft import main

SEED = 110
# microsoft/LoRA examples/NLG README, E2E on GPT-2 Medium (the model card, checkpoint and sequence
# length are the test's; none of them draws from the RNG before the first forward).
COMMAND = ["--train_batch_size", "8", "--grad_acc", "1", "--valid_batch_size", "4", "--platform", "local",
           "--clip", "0.0", "--lr", "0.0002", "--weight_decay", "0.01", "--correct_bias", "--adam_beta2", "0.999",
           "--scheduler", "linear", "--warmup_step", "500", "--max_epoch", "5", "--save_interval", "1000",
           "--lora_dim", "4", "--lora_alpha", "32", "--lora_dropout", "0.1", "--label_smooth", "0.1",
           "--random_seed", str(SEED)]


class _LayerNorm(nn.Module):  # the original's own LayerNorm: ones and zeros, not an nn.LayerNorm
    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))


class _Conv1D(nn.Module):
    def __init__(self, n_out: int, n_in: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.init.normal_(torch.empty(n_in, n_out), std=0.02))
        self.bias = nn.Parameter(torch.zeros(n_out))


def _reference(d: int, n_layer: int, n_positions: int, vocab: int, n_train: int, checkpoint: bool):
    """(per-layer (lora_A, lora_B), RNG state at the first forward) of the original's start."""
    torch.manual_seed(SEED)
    wte, wpe = nn.Embedding(vocab, d), nn.Embedding(n_positions, d)
    block = nn.Module()
    block.ln_1, block.attn, block.ln_2, block.mlp = _LayerNorm(d), nn.Module(), _LayerNorm(d), nn.Module()
    block.attn.c_attn = loralib.MergedLinear(d, 3 * d, r=4, lora_alpha=32, lora_dropout=0.1,
                                             enable_lora=[True, False, True], fan_in_fan_out=True, merge_weights=False)
    block.attn.c_proj = _Conv1D(d, d)
    block.mlp.c_fc, block.mlp.c_proj = _Conv1D(4 * d, d), _Conv1D(d, 4 * d)
    model = nn.Module()
    model.transformer = nn.Module()
    model.transformer.wte, model.transformer.wpe = wte, wpe
    model.transformer.h = nn.ModuleList([copy.deepcopy(block) for _ in range(n_layer)])
    model.transformer.ln_f = _LayerNorm(d)
    model.lm_head = nn.Module()
    model.lm_head.decoder = nn.Linear(d, vocab, bias=False)
    model.lm_head.decoder.weight = wte.weight

    def init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    model.apply(init)
    if checkpoint:  # load_weight copies the weights (no draw), then re-ties the head
        model.lm_head.decoder = nn.Linear(d, vocab, bias=False)
        model.lm_head.decoder.weight = wte.weight
    examples = list(range(n_train))
    sampler = DistributedSampler(examples, num_replicas=1, rank=0, seed=SEED)
    loader = DataLoader(examples, batch_size=8, sampler=sampler, shuffle=False, drop_last=True, num_workers=0)
    sampler.set_epoch(1)
    iter(loader)
    layers = [(blk.attn.c_attn.lora_A.detach().clone(), blk.attn.c_attn.lora_B.detach().clone())
              for blk in model.transformer.h]
    return layers, torch.get_rng_state()


class _FirstForward(Exception):
    """Raised by the observing hook once it has what it needs: training goes no further."""


def _ours_at_first_forward(argv: list[str]):
    """Run gpt2_ft.py's main and stop it at the model's first forward; what it saw there."""
    seen = {}

    def observe(module, args):  # the transformer runs first in training (through the loss module) and decoding
        if isinstance(module, GPT2Model):
            seen["layers"] = [(blk.attn.c_attn.lora_A.detach().clone(), blk.attn.c_attn.lora_B.detach().clone())
                              for blk in module.h]
            seen["rng"] = torch.get_rng_state()
            raise _FirstForward

    handle = torch.nn.modules.module.register_module_forward_pre_hook(observe)
    try:
        with pytest.raises(_FirstForward):
            main(argv)
    finally:
        handle.remove()
    return seen["layers"], seen["rng"]


def _assert_same_start(ours, reference, n_layer: int) -> None:
    (our_layers, our_rng), (ref_layers, ref_rng) = ours, reference
    assert len(our_layers) == len(ref_layers) == n_layer
    for (a, b), (ref_a, ref_b) in zip(our_layers, ref_layers):
        assert torch.equal(a, ref_a) and torch.equal(b, ref_b)
        assert torch.equal(a, our_layers[0][0])  # deep copies: every layer starts with layer 0's A
        assert not b.any()
    assert torch.equal(our_rng, ref_rng)


@pytest.fixture
def keep_torch_state():
    """main() sets threads and seeds; leave the next test the state it had."""
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    yield
    torch.set_num_threads(threads)
    torch.set_rng_state(rng)


def test_lora_start_equals_microsoft_lora_on_the_tiny_checkpoint(tiny_gpt2, e2e_data, tmp_path, keep_torch_state):
    card = json.loads((tiny_gpt2 / "card.json").read_text())
    train = e2e_data / "valid.jsonl"
    argv = COMMAND + ["--train_data", str(train), "--valid_data", str(e2e_data / "test.jsonl"), "--seq_len", "64",
                      "--model_card", str(tiny_gpt2 / "card.json"), "--init_checkpoint",
                      str(tiny_gpt2 / "pytorch_model.bin"), "--work_dir", str(tmp_path / "run"), "--threads", "1"]
    ours = _ours_at_first_forward(argv)
    n_train = len(train.read_text().splitlines())
    reference = _reference(card["n_embd"], card["n_layer"], card["n_positions"], card["vocab_size"], n_train,
                           checkpoint=True)
    _assert_same_start(ours, reference, card["n_layer"])


@pytest.mark.slow
def test_lora_start_equals_microsoft_lora_on_gpt2_medium(e2e_data, tmp_path, keep_torch_state):
    """The command's own model card: GPT-2 Medium's shapes (24 layers x 1024, no base weights needed:
    loading them draws nothing)."""
    train = e2e_data / "valid.jsonl"
    argv = COMMAND + ["--train_data", str(train), "--valid_data", str(e2e_data / "test.jsonl"), "--seq_len", "512",
                      "--model_card", "gpt2.md", "--work_dir", str(tmp_path / "run")]
    ours = _ours_at_first_forward(argv)
    reference = _reference(1024, 24, 1024, 50257, len(train.read_text().splitlines()), checkpoint=False)
    _assert_same_start(ours, reference, 24)
