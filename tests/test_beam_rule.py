"""The beam-search rule against a plain, brute-force restatement of microsoft/LoRA's NLG rule.

The reference below re-runs the whole sequence for every hypothesis (no KV cache, no batching, no
padding, no early stop) and follows the rule word by word; the model is a small random GPT-2 with
a 40-token vocabulary and peaked distributions, so EOS, n-gram bans and the length penalty all
come into play within a few steps.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from nola.decoding.beam import BeamSettings, beam_search, decode_contexts
from nola.gpt2.model import GPT2Config, GPT2LMModel

VOCAB = 40
EOS = (3, 7)


pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(seed: int = 2) -> GPT2LMModel:
    torch.manual_seed(seed)
    model = GPT2LMModel(GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, card="test"))
    with torch.no_grad():
        for block in model.transformer.h:  # distinct layers (the model is built as one block copied)
            for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                layer.weight.normal_(0, 0.02)
        model.transformer.wte.weight.normal_(0, 0.25)
        model.transformer.wte.weight[list(EOS)] *= 2.0  # EOS is likely enough to end some hypotheses
    return model.eval()


def contexts(seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(8, VOCAB, (n,), generator=g).tolist() for n in (5, 9, 2, 7, 4, 11)]


def reference_beam(model, context: list[int], s: BeamSettings) -> tuple[list[int], float]:
    """The rule, written out plainly for one example; returns (tokens, score) of the winner."""
    beams = [([], 0.0)]  # step 0: only the first beam is expanded
    best = None
    for step in range(s.eval_len):
        options = []
        for b, (toks, score) in enumerate(beams):
            with torch.no_grad():
                logits = model(torch.tensor([context + toks]))[0][0, -1].double().tolist()
            for t in set(toks):
                logits[t] = logits[t] * s.repetition_penalty if logits[t] < 0 else logits[t] / s.repetition_penalty
            if len(toks) < s.min_length:
                for e in s.eos_ids:
                    logits[e] = -math.inf
            n = s.no_repeat_ngram_size
            if n and len(toks) + 1 >= n:
                prefix = toks[len(toks) - n + 1:]
                for j in range(len(toks) - n + 1):
                    if toks[j:j + n - 1] == prefix:
                        logits[toks[j + n - 1]] = -math.inf
            logp = F.log_softmax(torch.tensor(logits, dtype=torch.float32), dim=0).tolist()
            options += [(score + logp[v], b, v) for v in range(VOCAB)]
        options.sort(key=lambda o: -o[0])  # stable: ties keep (beam, token) order
        beams = [(beams[b][0] + [v], sc) for sc, b, v in options[: s.beam]]
        for i, (toks, sc) in enumerate(beams):
            if toks[-1] in s.eos_ids:
                final = sc / len(toks) ** s.length_penalty
                if best is None or best[1] < final:
                    best = (toks, final)
                beams[i] = (toks, -math.inf)
    for toks, sc in beams:
        final = sc / len(toks) ** s.length_penalty
        if best is None or best[1] < final:
            best = (toks, final)
    return best


CASES = [
    BeamSettings(beam=1, eval_len=12, length_penalty=0.8, no_repeat_ngram_size=3, eos_ids=EOS),
    BeamSettings(beam=4, eval_len=12, length_penalty=0.8, no_repeat_ngram_size=3, eos_ids=EOS),
    BeamSettings(beam=4, eval_len=10, length_penalty=1.5, no_repeat_ngram_size=2, repetition_penalty=1.3,
                 min_length=5, eos_ids=EOS),
    BeamSettings(beam=3, eval_len=8, length_penalty=-0.5, no_repeat_ngram_size=3, eos_ids=EOS),
]


@pytest.mark.parametrize("settings", CASES, ids=["greedy", "beam4", "beam4-reppen-minlen", "beam3-negative-lp"])
def test_beam_equals_brute_force_reference_in_batches_of_1_and_3(settings):
    model = small_model()
    ctxs = contexts()
    expected = [reference_beam(model, c, settings)[0] for c in ctxs]
    alone = [beam_search(model, [c], settings)[0] for c in ctxs]
    assert alone == expected
    batched = decode_contexts(model, ctxs, settings, batch_size=3)
    assert batched == expected
    # the cases exercise the rule: some examples stop at an EOS, some run to eval_len, and
    # switching off any knob that is on changes some prediction (with one beam the only candidate
    # is the one hypothesis, so the length penalty cannot matter there)
    ends = [p[-1] in EOS for p in expected]
    assert any(ends) and not all(ends)
    knobs = {"no_repeat_ngram_size": 0, "length_penalty": 0.0, "repetition_penalty": 1.0, "min_length": 0}
    for name, off in knobs.items():
        if getattr(settings, name) != off and not (name == "length_penalty" and settings.beam == 1):
            changed = decode_contexts(model, ctxs, dataclasses.replace(settings, **{name: off}), batch_size=6)
            assert changed != expected, name


def test_beam_4_differs_from_greedy_and_settled_examples_leave_the_batch():
    model, ctxs = small_model(), contexts()
    rows = []
    model.register_forward_hook(lambda module, inputs, output: rows.append(output[0].shape[0]))
    greedy = decode_contexts(model, ctxs, CASES[0], batch_size=6)
    rows.clear()
    beam = decode_contexts(model, ctxs, CASES[1], batch_size=6)
    assert greedy != beam
    # one pass over the 6 contexts, then 6 x 4 hypotheses until examples settle (the brute-force
    # test above shows that dropping them early changes nothing)
    assert rows[:2] == [6, 24] and rows[-1] < 24 and len(rows) <= CASES[1].eval_len


def test_last_only_logits_and_left_padding_match_the_plain_forward():
    model, ctxs = small_model(), contexts()
    with torch.no_grad():
        for c in ctxs[:3]:
            ids = torch.tensor([c])
            assert torch.allclose(model(ids, last_only=True)[0][:, -1], model(ids)[0][:, -1], atol=1e-6)
        # a left-padded row with its key mask and shifted positions gives the unpadded row's logits
        short, width = ctxs[2], 9
        ids = torch.tensor([[0] * (width - len(short)) + short])
        pad = width - len(short)
        positions = (torch.arange(width) - pad).clamp(min=0)[None]
        mask = (torch.arange(width) >= pad)[None]
        padded = model(ids, position_ids=positions, key_mask=mask, last_only=True)[0][0, -1]
        plain = model(torch.tensor([short]))[0][0, -1]
    assert torch.allclose(padded, plain, atol=1e-5)
