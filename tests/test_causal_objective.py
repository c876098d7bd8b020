"""The causal-LM training loss at the target positions only (nola.causal.causal_objective) equals the model's
own ``labels=`` loss, and so do the adapter gradients: on tiny random models built here (LLaMA with a
head tied to the embeddings and without, Granite whose logits are scaled after the head) and on the
real SmolLM2-135M, for NOLA and LoRA, on right-padded batches of different lengths."""
from __future__ import annotations

import pytest
import torch

from nola.adapters import inject
from nola.causal.alpaca import collate
from nola.causal.causal_data import encode_d2t
from nola.causal.causal_objective import check_target_logits, loss_positions, target_logits, target_nll_sum, with_loss_positions
from nola.config import LoRAConfig, NOLAConfig
from nola.errors import UsageError
from nola.train.formats import read_e2e
from nola.lora_inject import inject_lora

RTOL = 1e-6


def tiny(kind: str, tied: bool) -> torch.nn.Module:
    from transformers import GraniteConfig, GraniteForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    shape = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tied, initializer_range=0.2)
    if kind == "granite":
        model = GraniteForCausalLM(GraniteConfig(**shape, logits_scaling=4.0))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape))
    return model.float()


def adapt(model: torch.nn.Module, adapter: str) -> None:
    """NOLA (α, β moved off their constant start) or LoRA (B moved off zero, so A has a gradient)."""
    torch.manual_seed(1)
    if adapter == "nola":
        for group in inject(model, NOLAConfig(rank=4, num_basis=16, c=4.0), ["q_proj", "v_proj", "down_proj"]).values():
            with torch.no_grad():
                group.alpha.normal_()
                group.beta.normal_()
    else:
        inject_lora(model, LoRAConfig(dim=2, alpha=8), ["q_proj", "v_proj", "down_proj"])
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.1)


def random_batch(vocab: int) -> dict[str, torch.Tensor]:
    """Prompts and targets of different lengths: three rows, right-padded to the longest."""
    gen = torch.Generator().manual_seed(2)
    items = []
    for prompt, target in ((5, 3), (9, 7), (2, 1)):
        ids = torch.randint(3, vocab, (prompt + target,), generator=gen).tolist()
        items.append((ids, [-100] * prompt + ids[prompt:]))
    return collate(items, pad_id=0)


def compare(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """Loss and every trainable gradient: targets only vs the model's own labels= loss."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def grads() -> dict[str, torch.Tensor]:
        out = {n: p.grad.clone() for n, p in trainable}
        model.zero_grad(set_to_none=True)
        return out

    own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    own.backward()
    reference = grads()
    fast_batch = with_loss_positions(batch)
    fast = target_nll_sum(target_logits(model, fast_batch), fast_batch) / len(fast_batch["targets"])
    fast.backward()
    ours = grads()
    assert abs(fast.item() - own.item()) <= RTOL * abs(own.item()), (fast.item(), own.item())
    for name, grad in reference.items():
        scale = grad.abs().max().item()
        assert scale > 0, name
        assert (ours[name] - grad).abs().max().item() <= RTOL * scale, name


def test_loss_positions_are_the_shifted_labels():
    labels = torch.tensor([[-100, -100, 7, 8, -100], [-100, 5, 6, 9, 4]])
    keep, targets = loss_positions(labels)
    assert keep.tolist() == [[False, True, True, False, False], [True, True, True, True, False]]
    assert targets.tolist() == [7, 8, 5, 6, 9, 4]


def test_a_model_without_logits_to_keep_is_refused_in_one_line():
    class Older(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return input_ids

    with pytest.raises(UsageError, match=r"^Older.forward has no logits_to_keep argument"):
        check_target_logits(Older())
    check_target_logits(tiny("llama", True))


@pytest.mark.parametrize("kind,tied", [("llama", True), ("llama", False), ("granite", True)])
@pytest.mark.parametrize("adapter", ["nola", "lora"])
def test_target_positions_loss_and_gradients_equal_the_models_own(kind, tied, adapter):
    model = tiny(kind, tied)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    adapt(model, adapter)
    compare(model.train(), random_batch(model.config.vocab_size))


@pytest.fixture(scope="module")
def real(smollm2_dir, mirror):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    records = read_e2e(mirror / "data/e2e/valid.txt")
    picked = [records[0], records[40], records[400]]  # meaning representations of different lengths
    batch = collate([encode_d2t(r, tok, 1024, 256) for r in picked], pad_id=tok.pad_token_id)
    assert len(set(batch["attention_mask"].sum(1).tolist())) == 3
    return smollm2_dir, batch


@pytest.mark.slow  # ~15 s a case on a quiet 2-core machine (a 135M model, forward and backward twice)
@pytest.mark.parametrize("adapter", ["nola", "lora"])
def test_on_smollm2_the_loss_and_gradients_equal_the_models_own(real, adapter):
    from transformers import AutoModelForCausalLM

    folder, batch = real
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # SmolLM2 ties its head
    torch.manual_seed(1)
    if adapter == "nola":
        for group in inject(model, NOLAConfig(rank=8, num_basis=64, c=4.0), ["q_proj", "v_proj"]).values():
            with torch.no_grad():
                group.alpha.normal_(std=0.1)
                group.beta.normal_(std=0.1)
    else:
        inject_lora(model, LoRAConfig(dim=1, alpha=8), ["q_proj", "v_proj"])
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.01)
    compare(model.train(), batch)
