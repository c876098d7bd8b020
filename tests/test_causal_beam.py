"""The beam rule driving a ``transformers`` causal LM (its DynamicCache, attention mask and position
ids) against the brute-force restatement of microsoft/LoRA's rule in tests/test_beam_rule.py, and
src/llama_beam.py end to end on a tiny LLaMA folder, scored by the official E2E scorer.

The reference re-runs the whole sequence for every hypothesis through the model's own forward
(no cache, no padding, no batching, no early stop), so it shares nothing with the code under test.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from nola.beam import beam_search, decode_contexts
from nola.config import BeamSettings
from tests.test_beam_rule import CASES, EOS, VOCAB, contexts, reference_beam

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llama(seed: int = 4):
    """A random 2-layer LLaMA over the reference's 40-token vocabulary (EOS 3 and 7), peaked enough
    that in every case some hypotheses end at an EOS and some run to eval_len."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=EOS[0], pad_token_id=0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0, 1.0)
        model.lm_head.weight.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("settings", CASES, ids=["greedy", "beam4", "beam4-reppen-minlen", "beam3-negative-lp"])
def test_rule_on_a_llama_equals_brute_force_reference_alone_and_batched(settings):
    model, ctxs = tiny_llama(), contexts()
    expected = [reference_beam(model, c, settings)[0] for c in ctxs]
    assert [beam_search(model, [c], settings)[0] for c in ctxs] == expected
    # batches of 3 and 6 mix context lengths: the padding must be masked out of attention
    assert decode_contexts(model, ctxs, settings, batch_size=3) == expected
    assert decode_contexts(model, ctxs, settings, batch_size=6) == expected
    ends = [p[-1] in EOS for p in expected]
    assert any(ends) and not all(ends)

