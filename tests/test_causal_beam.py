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

from nola.decoding.beam import beam_search, decode_contexts
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




@pytest.fixture(scope="module")
def decoded(tmp_path_factory, mirror, repo):
    """llama_beam.py run once on a tiny LLaMA folder + a NOLA adapter saved by the test, over the
    first 3 distinct E2E test contexts with --max_contexts 2; yields what the checks need."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import nola
    from nola.config import NOLAConfig
    from nola.causal.d2t import prompt_text, target_text
    from nola.train.formats import read_e2e
    from scripts.tiny_llama import save_tiny_llama, words_of

    tmp = tmp_path_factory.mktemp("llama_beam")
    records = read_e2e(mirror / "data" / "e2e" / "test.txt")
    contexts = list(dict.fromkeys(r["context"] for r in records))[:3]
    records = [r for r in records if r["context"] in contexts]
    data = tmp / "test_formatted.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    texts = [prompt_text(r["context"]) for r in records] + [target_text(r["completion"]) for r in records]
    base = save_tiny_llama(tmp / "base", words_of(texts), initializer_range=0.2)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    nola.inject(model, NOLAConfig(rank=2, num_basis=16), ["q_proj", "v_proj"])
    torch.manual_seed(1)
    with torch.no_grad():
        for group in model.nola.values():
            group.alpha.normal_(0, 0.5)
            group.beta.normal_(0, 0.5)
    nola.save_adapter(model, tmp / "adapter")
    ref, pred = tmp / "ref.txt", tmp / "pred.txt"
    run = subprocess.run([sys.executable, str(repo / "src" / "llama_beam.py"), "--model_name_or_path", str(base),
                          "--bits", "32", "--device", "cpu", "--adapter", str(tmp / "adapter"), "--data", str(data),
                          "--beam", "3", "--eval_len", "6", "--length_penalty", "0.8", "--no_repeat_ngram_size", "4",
                          "--max_contexts", "2", "--batch_size", "2",
                          "--output_ref_file", str(ref), "--output_pred_file", str(pred)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return {"model": model, "tokenizer": AutoTokenizer.from_pretrained(base), "records": records,
            "contexts": contexts, "ref": ref, "pred": pred, "stderr": run.stderr}


def test_cli_writes_the_rules_predictions_and_gpt2_decodes_reference_layout(decoded):
    """The predictions are the rule's on the unmerged adapted model (decoded text, EOS dropped,
    stripped), the references gpt2_decode.py's E2E layout, only the first --max_contexts contexts."""
    from nola.causal.d2t import prompt_ids

    model, tok, records, contexts = (decoded[k] for k in ("model", "tokenizer", "records", "contexts"))
    assert "merged" in decoded["stderr"]
    settings = BeamSettings(beam=3, eval_len=6, length_penalty=0.8, no_repeat_ngram_size=4, eos_ids=(tok.eos_token_id,))
    expected = []
    for context in contexts[:2]:
        ids = beam_search(model, [prompt_ids(tok, context)], settings)[0]
        expected.append(tok.decode(ids[:-1] if ids[-1] == tok.eos_token_id else ids).strip())
    assert all(expected)  # the tiny model writes words, so the comparison is not between empty lines
    assert decoded["pred"].read_text() == "".join(line + "\n" for line in expected)
    groups = ["".join(r["completion"].strip() + "\n" for r in records if r["context"] == c) for c in contexts[:2]]
    assert decoded["ref"].read_text() == "\n".join(groups) + "\n"


@pytest.mark.slow
def test_the_e2e_scorer_reads_the_cli_files(decoded, repo):
    scored = subprocess.run([sys.executable, str(repo / "eval" / "e2e" / "measure_scores.py"), str(decoded["ref"]),
                             str(decoded["pred"]), "-p", "--json"], capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["outputs"] == 2 and set(report["scores"]) == {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}


@pytest.mark.slow
def test_on_smollm2_batched_contexts_of_different_lengths_equal_one_at_a_time(smollm2_dir, mirror):
    """The real tokenizer and 30-layer model: two E2E prompts of different lengths share a left-padded
    batch and give what each gives alone; both stop at SmolLM2's EOS or run to eval_len."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nola.causal.d2t import eos_id, prompt_ids
    from nola.train.formats import read_e2e

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    mrs = list(dict.fromkeys(r["context"] for r in read_e2e(mirror / "data" / "e2e" / "test.txt")))
    queries = [prompt_ids(tok, mrs[0]), prompt_ids(tok, mrs[2])]
    assert len(queries[0]) != len(queries[1])
    settings = BeamSettings(beam=4, eval_len=8, length_penalty=0.8, no_repeat_ngram_size=4, eos_ids=(eos_id(tok),))
    alone = [beam_search(model, [q], settings)[0] for q in queries]
    assert decode_contexts(model, queries, settings, batch_size=2) == alone
    assert all(len(p) == 8 or p[-1] == eos_id(tok) for p in alone)
