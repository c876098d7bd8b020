"""NOLA adapters against closed-form maths: ΔW = s·A·B, both execution modes, merge, counts."""
from __future__ import annotations

import pytest
import torch

from nola.basis import basis_seed, uniform_rows
from nola.config import NOLAConfig
from nola.layers import NOLAGroup, _MixOnTheFly, basis_bounds
from nola.adapters import count_trainable
from nola.gpt2.model import GPT2Config, GPT2LMModel, lm_loss, lora_count, nola_roles


def _cfg(**kw) -> NOLAConfig:
    base = dict(rank=3, num_basis=7, c=2.0, qv=True, seed=11, basis_dtype="float64")
    base.update(kw)
    return NOLAConfig(**base)


@pytest.mark.parametrize("per_layer", [False, True])
def test_delta_weight_equals_closed_form(per_layer):
    cfg = _cfg(seed_per_layer=per_layer)
    group = NOLAGroup("attn_q", 2, 5, 6, cfg).double()
    torch.manual_seed(0)
    with torch.no_grad():
        group.alpha.normal_()
        group.beta.normal_()
    bound_a, bound_b = basis_bounds(5, 6, 3)
    assert bound_a == 1 / (5 * 3) ** 0.5 and bound_b == 1 / (3 * 6) ** 0.5
    for layer in range(2):
        key = layer if per_layer else None
        basis_a = uniform_rows(basis_seed(11, "attn_q", "A", key), 7, 15, bound_a, dtype=torch.float64).view(7, 5, 3)
        basis_b = uniform_rows(basis_seed(11, "attn_q", "B", key), 7, 18, bound_b, dtype=torch.float64).view(7, 3, 6)
        a = sum(group.alpha[layer, i] * basis_a[i] for i in range(7))
        b = sum(group.beta[layer, j] * basis_b[j] for j in range(7))
        expected = (2.0 / 3) * a @ b
        assert torch.allclose(group.delta_weight()[layer], expected, atol=1e-12)


def test_init_is_one_over_k_and_delta_is_small_but_nonzero():
    group = NOLAGroup("attn_v", 3, 16, 16, _cfg(num_basis=10, basis_dtype="float32"))
    assert torch.equal(group.alpha, torch.full((3, 10), 0.1)) and torch.equal(group.beta, torch.full((3, 10), 0.1))
    delta = group.delta_weight()
    assert 0 < delta.abs().max() < 1e-2


@pytest.mark.parametrize("per_layer", [False, True])
def test_onthefly_matches_materialised_outputs_and_gradients(per_layer):
    cfg = _cfg(seed_per_layer=per_layer, chunk_rows=3)
    mat = NOLAGroup("attn_q", 2, 5, 4, cfg).double()
    fly = NOLAGroup("attn_q", 2, 5, 4, _cfg(seed_per_layer=per_layer, chunk_rows=3, mode="onthefly")).double()
    assert fly.basis_a is None and fly.basis_b is None
    torch.manual_seed(1)
    with torch.no_grad():
        for g in (mat, fly):
            g.alpha.copy_(torch.linspace(-1, 1, 14).view(2, 7))
            g.beta.copy_(torch.linspace(2, -1, 14).view(2, 7))
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    outs = []
    for g in (mat, fly):
        a, b = g.factors()
        y = torch.einsum("bti,lir,lro->lbto", x, a, b).square().sum()
        y.backward()
        outs.append((y.detach(), g.alpha.grad.clone(), g.beta.grad.clone()))
    for m, f in zip(*outs):
        assert torch.allclose(m, f, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seeds", [(5,), (5, 6)])
def test_onthefly_gradcheck(seeds):
    coeff = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda c: _MixOnTheFly.apply(c, seeds, 6, 10, 0.3, 4, torch.float64), (coeff,))


def test_quantised_group_uses_quantised_coefficients():
    group = NOLAGroup("attn_q", 1, 4, 4, _cfg(qbits=3, num_basis=5))
    with torch.no_grad():
        group.alpha.copy_(torch.tensor([[0.9, -0.3, 0.1, 0.0, 0.5]]))
    alpha, _ = group.coefficients()
    # q = 3, max = 0.9: codes round([3, -1, 1/3, 0, 5/3]) = [3, -1, 0, 0, 2]
    assert torch.allclose(alpha, torch.tensor([[0.9, -0.3, 0.0, 0.0, 0.6]], dtype=alpha.dtype))


def _tiny(nola=None, lora=None, seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2)
    return GPT2LMModel(cfg, nola=nola, lora=lora)


@pytest.mark.parametrize("mlp", [False, True])
def test_merge_then_unmerge_restores_weights_and_merged_output_matches(mlp):
    model = _tiny(NOLAConfig(rank=4, num_basis=8, qv=True, mlp=mlp)).eval()
    with torch.no_grad():
        for g in model.nola.values():
            g.alpha.normal_(0, 3.0)
            g.beta.normal_(0, 3.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        adapted, _ = model(x)
        model.merge_adapters()
        merged, _ = model(x)
        assert not torch.allclose(model.transformer.h[0].attn.c_attn.weight, before["transformer.h.0.attn.c_attn.weight"])
        model.unmerge_adapters()
        again, _ = model(x)
    assert torch.allclose(adapted, merged, atol=1e-5)
    assert torch.allclose(adapted, again, atol=1e-6)
    for k, v in model.state_dict().items():
        assert torch.allclose(v, before[k], atol=1e-6), k


def test_trainable_counts_follow_the_formula():
    for card, layers, width in (("gpt2.sm", 12, 768), ("gpt2.md", 24, 1024), ("gpt2.lg", 36, 1280)):
        cfg = GPT2Config.from_card(card)
        with torch.device("meta"):
            nola = GPT2LMModel(cfg, nola=NOLAConfig(rank=8, num_basis=1000, qv=True, mode="onthefly"))
            both = GPT2LMModel(cfg, nola=NOLAConfig(rank=8, num_basis=1000, qv=True, mlp=True, mode="onthefly"))
            lora = GPT2LMModel(cfg, lora=__import__("nola.config").config.LoRAConfig(dim=4))
        assert count_trainable(nola) == layers * 2 * (1000 + 1000)
        assert count_trainable(both) == layers * 4 * (1000 + 1000)
        assert count_trainable(lora) == layers * 2 * 4 * (width + width)
        assert lora_count(cfg, 4, nola_roles(cfg, nola.nola_config)) == count_trainable(lora)
    assert count_trainable(nola) == 144_000  # GPT-2 Large, the paper's 0.144M row


def test_one_step_on_alpha_beta_lowers_the_loss():
    model = _tiny(NOLAConfig(rank=4, num_basis=16, qv=True, mlp=True), seed=3)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"nola.{r}.{c}" for r in ("attn_q", "attn_v", "mlp_fc", "mlp_proj") for c in ("alpha", "beta")}
    torch.manual_seed(4)
    x = torch.randint(0, 64, (4, 12))
    target = torch.roll(x, -1, dims=1)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05, weight_decay=0.0)
    first = lm_loss(model(x)[0], target)
    first.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    opt.step()
    with torch.no_grad():
        second = lm_loss(model(x)[0], target)
    assert second < first - 1e-4
