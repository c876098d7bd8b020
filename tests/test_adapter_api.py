"""The native API (`nola.inject`) at PEFT's level: targets in the config, the handle's merge / unmerge /
disable / unload, inference loading, factors mixed once while no gradient is needed (and mixed anew
whenever α / β change), deltas on the input's device, gradient checkpointing, merging refused on
integer weights, `torch.compile`'s key prefix, one error type."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

import nola
from nola.adapters import adapter_state, freeze_base, is_adapter_key
from nola.errors import NOLAError, UsageError
from nola.layers import NOLAGroup

hf_logging.set_verbosity_error()
VOCAB, K = 64, 16
TARGETS = ["q_proj", "v_proj", "down_proj"]


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=64)).eval()


def _config(**kw) -> nola.NOLAConfig:
    return nola.NOLAConfig(**{"rank": 4, "num_basis": K, "c": 2.0, "seed": 5, "target_modules": TARGETS, **kw})


IDS = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(1))


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _adapted(group_cls: type[NOLAGroup] = NOLAGroup):
    base = _llama()
    model = copy.deepcopy(base)
    handle = nola.inject(model, _config(), group_cls=group_cls)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for group in handle.values():
            group.alpha.copy_(torch.randn(group.alpha.shape, generator=gen) / K)
            group.beta.copy_(torch.randn(group.beta.shape, generator=gen) / K)
    return base, model, handle


class CountingGroup(NOLAGroup):
    """Counts how often the factors of all layers are mixed."""

    mixes = 0

    def factors_of(self, alpha, beta):
        CountingGroup.mixes += 1
        return super().factors_of(alpha, beta)


def test_targets_from_the_config_and_the_handle_merges_disables_and_unloads():
    base, model, handle = _adapted()
    assert model.nola is handle and model.adapter_spec.target_modules == tuple(TARGETS)
    adapted, plain = _logits(model), _logits(base)
    handle.merge()
    assert handle.merged and (_logits(model) - adapted).abs().max() <= 1e-5
    with handle.disabled():
        assert (_logits(model) - plain).abs().max() <= 1e-5
    assert handle.merged and (_logits(model) - adapted).abs().max() <= 1e-5
    handle.unmerge()  # the weights are back up to rounding
    with handle.disabled():
        assert (_logits(model) - plain).abs().max() <= 1e-6
    assert (_logits(model) - adapted).abs().max() <= 1e-6
    unloaded = handle.unload()
    assert unloaded is model and not hasattr(model, "nola") and not hasattr(model, "adapter_spec")
    assert model.state_dict().keys() == base.state_dict().keys()
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    assert (_logits(model) - plain).abs().max() <= 1e-6
    _, other, handle = _adapted()
    merged = handle.merge_and_unload()
    assert type(merged) is LlamaForCausalLM and (_logits(merged) - adapted).abs().max() <= 1e-5


def test_load_adapter_is_for_inference_unless_trainable(tmp_path):
    base, model, _ = _adapted()
    folder = nola.save_adapter(model, tmp_path / "a")
    loaded = nola.load_adapter(copy.deepcopy(base), folder)
    assert torch.equal(_logits(loaded), _logits(model))
    assert not any(p.requires_grad for p in loaded.parameters())
    going_on = nola.load_adapter(copy.deepcopy(base), folder, trainable=True)
    assert {n for n, p in going_on.named_parameters() if p.requires_grad} == set(adapter_state(model))


def test_generate_mixes_once_and_any_change_of_the_coefficients_mixes_again():
    _, model, handle = _adapted(CountingGroup)
    roles = len(handle)
    for group in handle.values():
        group.alpha.requires_grad_(False)
        group.beta.requires_grad_(False)
    CountingGroup.mixes = 0
    out = model.generate(IDS, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert out.shape[1] == IDS.shape[1] + 8 and CountingGroup.mixes == roles  # 8 forward passes, one mixing
    before = _logits(model)
    group = handle["q_proj"]
    changes = [lambda: group.alpha.add_(0.01),                                   # in place
               lambda: group.beta.copy_(group.beta * 2),                          # copy_
               lambda: model.load_state_dict({**model.state_dict(), "nola.v_proj.alpha": group.alpha * 0}),
               lambda: setattr(group.alpha, "data", group.alpha.data + 0.01)]     # a new storage
    for change in changes:
        with torch.no_grad():
            change()
        after = _logits(model)
        fresh = copy.deepcopy(model)  # a model that never mixed before
        for g in fresh.nola.values():
            g.forget()
        assert torch.equal(after, _logits(fresh)) and not torch.equal(after, before)
        before = after


def test_training_mixes_once_per_step_and_matches_a_fresh_mix():
    _, model, handle = _adapted(CountingGroup)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    CountingGroup.mixes = 0
    for _ in range(3):  # forward, backward (twice: accumulation), step
        for _ in range(2):
            model(input_ids=IDS, labels=IDS).loss.backward()
        opt.step()
        opt.zero_grad()
    assert CountingGroup.mixes == 6 * len(handle)
    model(input_ids=IDS, labels=IDS)  # factors kept with their graph: a copy leaves them behind
    copy.deepcopy(model)
    model.eval()
    reference = copy.deepcopy(model)
    for g in reference.nola.values():
        g.forget()
    assert torch.equal(_logits(model), _logits(reference))


@pytest.mark.cuda
def test_a_model_spread_over_devices_adds_each_delta_on_its_layer_device():
    """As ``device_map="auto"`` places it: the group (bases, α, β) with the first layer, a later layer elsewhere."""
    base, model, handle = _adapted()
    expected = _logits(model)
    for layer in model.model.layers[1:]:
        layer.cuda()
    model.model.layers[1].register_forward_pre_hook(
        lambda module, args, kwargs: (tuple(a.cuda() if torch.is_tensor(a) else a for a in args),
                                      {k: v.cuda() if torch.is_tensor(v) else v for k, v in kwargs.items()}),
        with_kwargs=True)
    model.model.norm.register_forward_pre_hook(lambda module, args: tuple(a.cpu() for a in args))
    assert handle["q_proj"].alpha.device.type == "cpu"
    assert (_logits(model) - expected).abs().max() <= 1e-4


@pytest.mark.parametrize("reentrant", [True, False])
def test_gradient_checkpointing_keeps_alpha_beta_gradients(reentrant):
    _, model, _ = _adapted()
    reference = copy.deepcopy(model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    for m in (model, reference):
        m.train()
        m(input_ids=IDS, labels=IDS).loss.backward()
    for (name, p), q in zip(model.nola.named_parameters(), reference.nola.parameters()):
        assert p.grad is not None and torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-9), name


def test_merging_into_an_integer_weight_is_refused_by_the_library():
    _, model, handle = _adapted()
    layer = model.model.layers[1].self_attn.q_proj  # the last of its role: nothing may be half merged
    layer.weight = torch.nn.Parameter(torch.zeros_like(layer.weight, dtype=torch.int8), requires_grad=False)
    untouched = model.model.layers[0].self_attn.q_proj.weight.clone()
    with pytest.raises(NOLAError, match="cannot merge NOLA into a int8"):
        handle.merge()
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, untouched) and not handle.merged


def test_compiled_model_keys_are_adapter_keys():
    _, model, _ = _adapted()
    compiled = torch.compile(model)  # wraps only: nothing is compiled until it is called
    keys = set(adapter_state(compiled))
    assert keys and all(k.startswith("_orig_mod.nola.") for k in keys)
    assert is_adapter_key("module._orig_mod.nola.q_proj.alpha") and not is_adapter_key("_orig_mod.lm_head.weight")
    freeze_base(compiled)
    assert {n for n, p in compiled.named_parameters() if p.requires_grad} == keys


def test_one_error_type_for_what_the_user_can_fix(tmp_path):
    assert UsageError is NOLAError and issubclass(NOLAError, ValueError)
    with pytest.raises(NOLAError, match="matches no nn.Linear"):
        nola.inject(_llama(), _config(target_modules=["nowhere"]))
    with pytest.raises(NOLAError, match="target modules"):
        nola.inject(_llama(), _config(target_modules=None))
    with pytest.raises(NOLAError, match="already carries"):
        _, model, _ = _adapted()
        nola.inject(model, _config())
    with pytest.raises(NOLAError, match="carries no adapter"):
        nola.save_adapter(_llama(), tmp_path)
