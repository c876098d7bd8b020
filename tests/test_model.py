"""Our GPT-2 against transformers' GPT2LMHeadModel on the same weights, loaded from real files."""
from __future__ import annotations


import pytest
import torch
from transformers import GPT2LMHeadModel

from nola.gpt2.build import build_from_flags
from nola.errors import UsageError
from nola.gpt2.model import lm_loss

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def reference(tiny_gpt2):
    hf = GPT2LMHeadModel.from_pretrained(tiny_gpt2).eval()
    torch.manual_seed(0)
    ids = torch.randint(0, 50257, (3, 17))
    with torch.no_grad():
        return ids, hf(ids).logits


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.safetensors"])
@pytest.mark.parametrize("adapter", [[], ["--nola_rank", "4", "--nola_qv", "--nola_mlp", "--nola_num_basis", "6"]])
def test_logits_equal_transformers_with_and_without_cache(tiny_gpt2, reference, weights, adapter):
    ids, expected = reference
    model = build_from_flags(("--model_card", str(tiny_gpt2 / "config.json"),
                              "--init_checkpoint", str(tiny_gpt2 / weights), *adapter), CPU).model.eval()
    if adapter:
        with torch.no_grad():
            for group in model.nola.values():
                group.alpha.zero_()
    with torch.no_grad():
        logits, _ = model(ids)
        assert (logits - expected).abs().max() <= 1e-5
        first, past = model(ids[:, :9])
        rest = [first]
        for t in range(9, ids.shape[1]):
            step, past = model(ids[:, t : t + 1], past=past)
            rest.append(step)
        assert (torch.cat(rest, dim=1) - expected).abs().max() <= 1e-5
        chunked, _ = model(ids[:, 12:], past=[(k[:, :, :12], v[:, :, :12]) for k, v in past])
        assert (chunked - expected[:, 12:]).abs().max() <= 1e-5


def test_key_padding_and_positions_reproduce_unpadded_logits(tiny_gpt2, reference):
    ids, expected = reference
    model = build_from_flags(("--model_card", str(tiny_gpt2 / "card.json"),
                              "--init_checkpoint", str(tiny_gpt2 / "model.safetensors")), CPU).model.eval()
    pad = 4
    padded = torch.cat([torch.zeros(3, pad, dtype=torch.long), ids], dim=1)
    key_mask = torch.cat([torch.zeros(3, pad, dtype=torch.bool), torch.ones_like(ids, dtype=torch.bool)], dim=1)
    positions = (torch.arange(padded.shape[1]) - pad).clamp(min=0).expand(3, -1)
    with torch.no_grad():
        logits, _ = model(padded, position_ids=positions, key_mask=key_mask)
    assert (logits[:, pad:] - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("layout", ["module.transformer.", "transformer.", "suffix"])
def test_older_key_layouts_load(tmp_path, tiny_gpt2, reference, layout):
    state = torch.load(tiny_gpt2 / "pytorch_model.bin", weights_only=True)
    if layout == "suffix":
        renamed = {}
        for k, v in state.items():
            for long, short in ((".weight", ".w"), (".bias", ".b")):
                if k.endswith(long) and ".ln_" in k:
                    k = k[: -len(long)] + (".g" if short == ".w" else ".b")
                elif k.endswith(long):
                    k = k[: -len(long)] + short
            renamed[k] = v
    else:
        renamed = {layout + k: v for k, v in state.items()}
    path = tmp_path / "old.bin"
    torch.save({"model_state_dict": renamed} if layout == "module.transformer." else renamed, path)
    model = build_from_flags(("--model_card", str(tiny_gpt2 / "card.json"), "--init_checkpoint", str(path)), CPU).model
    ids, expected = reference
    with torch.no_grad():
        assert (model.eval()(ids)[0] - expected).abs().max() <= 1e-5


def test_shape_mismatch_and_missing_keys_are_clear_errors(tmp_path, tiny_gpt2):
    with pytest.raises(UsageError, match=r"tensor h\.0\.attn\.c_attn\.bias has shape \(96,\) but model card gpt2\.sm expects \(2304,\)"):
        state = torch.load(tiny_gpt2 / "pytorch_model.bin", weights_only=True)
        small = {k: v for k, v in state.items() if not k.startswith(("wte", "wpe"))}
        torch.save(small, tmp_path / "partial.bin")
        build_from_flags(("--model_card", "gpt2.sm", "--init_checkpoint", str(tmp_path / "partial.bin")), CPU)
    with pytest.raises(UsageError, match=r"2 tensors missing .*wpe\.weight, wte\.weight"):
        build_from_flags(("--model_card", str(tiny_gpt2 / "card.json"), "--init_checkpoint", str(tmp_path / "partial.bin")), CPU)
    (tmp_path / "broken.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="unreadable or truncated"):
        build_from_flags(("--model_card", str(tiny_gpt2 / "card.json"), "--init_checkpoint", str(tmp_path / "broken.bin")), CPU)
    with pytest.raises(UsageError, match="not found"):
        build_from_flags(("--model_card", str(tiny_gpt2 / "card.json"), "--init_checkpoint", str(tmp_path / "nope.bin")), CPU)
    with pytest.raises(UsageError, match="cannot be combined"):
        build_from_flags(("--model_card", "gpt2.sm", "--nola_rank", "8", "--nola_qv", "--lora_dim", "4"), CPU)


def test_label_smoothed_masked_loss_matches_formula():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    target = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.float)
    logp = torch.log_softmax(logits, -1)
    per_tok = torch.zeros(2, 5)
    for b in range(2):
        for t in range(5):
            per_tok[b, t] = 0.9 * -logp[b, t, target[b, t]] + 0.1 * -logp[b, t].mean()
    expected = (per_tok * mask).sum() / (mask.sum() + 1e-4)
    assert torch.allclose(lm_loss(logits, target, mask, 0.1), expected, atol=1e-6)
    plain = torch.nn.functional.cross_entropy(logits.view(-1, 11), target.view(-1))
    assert torch.allclose(lm_loss(logits, target) * (10 + 1e-4) / 10, plain, atol=1e-6)


def test_rank_shares_of_a_split_batch_average_to_the_whole_batch_loss_and_gradient():
    """Two 'ranks' holding rows of 2 and 4 scored tokens: each divides by the 6 tokens of both and
    scales by 2, so DDP's mean of their gradients is the whole batch's. With the defaults
    (one process) the loss is the original's Σ / (Σmask + 1e-4) to the bit."""
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11, requires_grad=True)
    target = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.float)
    whole = lm_loss(logits, target, mask, 0.1)
    (expected,) = torch.autograd.grad(whole, logits)
    shares = [lm_loss(logits[r], target[r], mask[r], 0.1, tokens=mask.sum(), world_size=2) for r in range(2)]
    (grad,) = torch.autograd.grad(sum(shares) / 2, logits)
    assert torch.allclose(sum(shares) / 2, whole, rtol=1e-6) and torch.allclose(grad, expected, rtol=1e-6)
    means = sum(lm_loss(logits[r], target[r], mask[r], 0.1) for r in range(2)) / 2  # each rank's own count
    (skewed,) = torch.autograd.grad(means, logits)
    assert torch.allclose(skewed[0], expected[0] * 6 / 4, rtol=1e-4)  # row 0's 2 tokens weigh 1/4, not 1/6
    # microsoft/LoRA's formula, written out: the one-process loss and gradient are these, to the bit.
    logp = torch.log_softmax(logits.float(), dim=-1)
    smoothed = 0.9 * -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1) - 0.1 * logp.mean(dim=-1)
    original = (smoothed * mask).sum() / (mask.sum() + 1e-4)
    assert torch.equal(whole, original)
    assert torch.equal(expected, torch.autograd.grad(original, logits)[0])
