"""NOLA (and LoRA) injected into `transformers` models: GPT-2 against the fork, tiny LLaMA and ViT
trained, merged, saved and loaded; the LLaMA-2 parameter counts against the closed form."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, ViTConfig,
                          ViTForImageClassification)
from transformers.utils import logging as hf_logging

import nola
from nola.config import LoRAConfig, NOLAConfig
from nola.errors import UsageError
from nola.hf_adapter import CONFIG_FILE, WEIGHTS_FILE, check_base, file_identity
from nola.integrity import CONTENT_KEY, content_digest
from nola.adapters import gpt2_targets, set_merged
from nola.gpt2.model import GPT2Config as ForkConfig
from nola.adapters import count_trainable
from nola.gpt2.model import GPT2LMModel
from nola.quant import fake_quant
from scripts.param_table import PROJECTIONS, count_lora, count_nola, llama2_config

hf_logging.set_verbosity_error()
VOCAB = 64


def test_import_nola_is_cheap_and_nola_inject_is_the_function():
    code = ("import sys, nola; assert 'torch' not in sys.modules; import nola.adapters, nola.gpt2.model; "
            "assert callable(nola.inject) and nola.inject is nola.adapters.inject")
    src = str(Path(nola.__file__).parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": src})


def _nola(**kw) -> NOLAConfig:
    return NOLAConfig(**{"rank": 4, "num_basis": 16, "c": 2.0, "seed": 5, **kw})


def _gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)).eval()


def _llama(intermediate: int = 48) -> LlamaForCausalLM:
    torch.manual_seed(0)  # 4 query heads, 2 key/value heads: k_proj and v_proj are 32 -> 16
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=intermediate,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=32)).eval()


def _vit() -> ViTForImageClassification:
    torch.manual_seed(0)  # a classifier of weights ~0.2 (not 0.02), so the frozen head passes changes on
    return ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                               intermediate_size=48, image_size=16, patch_size=4,
                                               num_labels=3, initializer_range=0.2)).eval()


def _llama_batch():
    ids = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "labels": ids}


def _vit_batch():
    gen = torch.Generator().manual_seed(1)
    return {"pixel_values": torch.randn(4, 3, 16, 16, generator=gen), "labels": torch.tensor([0, 1, 2, 1])}


# name -> (base model, targets, batch). transformers 5 names ViT's query / value q_proj / v_proj.
MODELS = {"llama": (_llama, PROJECTIONS, _llama_batch), "vit": (_vit, ["q_proj", "v_proj"], _vit_batch)}


def _randomise(model: torch.nn.Module, seed: int = 2) -> None:
    """Non-trivial α/β (each row its own scale), so a wrong delta cannot hide behind 1/k."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for group in model.nola.values():
            for p in (group.alpha, group.beta):
                p.copy_(torch.randn(p.shape, generator=gen) * torch.rand(p.shape[0], 1, generator=gen))


def _adapted(name: str, **kw):
    build, targets, batch = MODELS[name]
    model = build()
    nola.inject(model, _nola(**kw), targets)
    return model, batch()


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("mode,qbits", [("materialised", None), ("onthefly", 3)])
def test_gpt2_head_model_equals_the_fork_with_and_without_merge(mode, qbits):
    hf = _gpt2()
    cfg = _nola(qv=True, mlp=True, qbits=qbits)
    fork = GPT2LMModel(ForkConfig(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4), nola=cfg).eval()
    weights = {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    missing, unexpected = fork.load_state_dict(weights, strict=False)
    assert unexpected == [] and all(k.startswith("nola.") for k in missing)
    ids = torch.randint(0, VOCAB, (3, 11), generator=torch.Generator().manual_seed(1))
    base = _logits(hf, {"input_ids": ids})
    nola.inject(hf, NOLAConfig(**{**cfg.to_dict(), "mode": mode}), gpt2_targets(cfg))
    _randomise(hf)
    fork.load_state_dict({k: v for k, v in hf.state_dict().items() if k.startswith("nola.")}, strict=False)
    with torch.no_grad():
        ours = _logits(hf, {"input_ids": ids})
        assert (ours - base).abs().max() > 1e-2  # the adapter changes the output
        assert (ours - fork(ids)[0]).abs().max() <= 1e-5
        set_merged(hf, True)
        fork.merge_adapters()
        merged = _logits(hf, {"input_ids": ids})
        assert (merged - fork(ids)[0]).abs().max() <= 1e-5 and (merged - ours).abs().max() <= 1e-5


@pytest.mark.parametrize("build,targets", [(_gpt2, ["attn_q", "attn_v", "mlp_fc"]), (_llama, PROJECTIONS)])
def test_cached_decoding_and_generate_see_the_adapter(build, targets):
    model = build()
    nola.inject(model, _nola(), targets)
    _randomise(model)
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(input_ids=ids).logits
        out = model(input_ids=ids[:, :6], use_cache=True)
        steps = [out.logits]
        for t in range(6, 10):
            out = model(input_ids=ids[:, t : t + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits)
        assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-5
        greedy = model.generate(ids[:, :4], max_new_tokens=6, do_sample=False, pad_token_id=0)
        set_merged(model, True)
        assert torch.equal(model.generate(ids[:, :4], max_new_tokens=6, do_sample=False, pad_token_id=0), greedy)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mode,qbits", [("materialised", None), ("onthefly", 3)])
def test_adamw_on_alpha_beta_lowers_the_loss_and_only_they_train(name, mode, qbits):
    model, batch = _adapted(name, mode=mode, qbits=qbits)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(f"nola.{role}.{f}" for role in model.nola for f in ("alpha", "beta"))
    layers = model.config.num_hidden_layers
    assert count_trainable(model) == len(model.nola) * layers * 2 * 16  # Σ_roles L·2k
    if name == "llama":  # grouped-query attention: k and v have their own (narrower) shape
        assert (model.nola["k_proj"].d_out, model.nola["q_proj"].d_out) == (16, 32)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.2)
    model.train()
    initial = model(**batch).loss.item()
    for _ in range(5):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    assert model(**batch).loss.item() < initial - 0.05


def test_a_target_of_two_shapes_becomes_one_role_per_shape():
    model = _gpt2()  # "c_proj" names attn.c_proj (32 -> 32) and mlp.c_proj (128 -> 32)
    nola.inject(model, _nola(), ["c_proj"])
    assert sorted(model.nola) == ["c_proj_128x32", "c_proj_32x32"]
    assert count_trainable(model) == 2 * 2 * 2 * 16
    _randomise(model)
    ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    unmerged = _logits(model, {"input_ids": ids})
    set_merged(model, True)
    assert (_logits(model, {"input_ids": ids}) - unmerged).abs().max() <= 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_merged_equals_unmerged_and_unmerge_restores_weights(name):
    model, batch = _adapted(name, qbits=3)
    _randomise(model)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    unmerged = _logits(model, batch)
    set_merged(model, True)
    merged = _logits(model, batch)
    assert (merged - unmerged).abs().max() <= 1e-5
    set_merged(model, False)
    for key, value in model.state_dict().items():
        assert (value - weights[key]).abs().max() <= 1e-6, key


@pytest.mark.parametrize("name", MODELS)
def test_both_modes_give_equal_outputs_and_gradients(name):
    build, targets, make_batch = MODELS[name]
    base, batch = build(), make_batch()
    models = []
    for mode in ("materialised", "onthefly"):
        model = copy.deepcopy(base)
        nola.inject(model, _nola(mode=mode, chunk_rows=5), targets)
        _randomise(model)
        loss = model(**batch).loss
        loss.backward()
        models.append((loss, model))
    (loss_m, mat), (loss_f, fly) = models
    assert fly.nola[targets[0]].basis_a is None
    assert abs(loss_m.item() - loss_f.item()) <= 1e-6
    for role in mat.nola:
        for f in ("alpha", "beta"):
            g_m, g_f = getattr(mat.nola[role], f).grad, getattr(fly.nola[role], f).grad
            assert (g_m - g_f).abs().max() <= 1e-5 * (1 + g_m.abs().max()), (role, f)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("qbits", [None, 3])
def test_save_then_load_is_bit_exact(tmp_path, name, qbits):
    build, targets, make_batch = MODELS[name]
    base, batch = build(), make_batch()
    model = copy.deepcopy(base)
    nola.inject(model, _nola(qbits=qbits), targets)
    _randomise(model)
    expected = _logits(model, batch)
    nola.save_adapter(model, tmp_path / "adapter")
    fresh = nola.load_adapter(copy.deepcopy(base), tmp_path / "adapter")  # injects from the folder
    assert torch.equal(_logits(fresh, batch), expected)
    for role, group in model.nola.items():
        for ours, theirs in zip(group.coefficients(), fresh.nola[role].coefficients()):
            assert torch.equal(ours, theirs)
    payload = load_safetensors((tmp_path / "adapter" / WEIGHTS_FILE).read_bytes())
    rows = sum(g.num_layers for g in model.nola.values()) * 2
    if qbits is None:
        assert all(v.dtype == torch.float32 for v in payload.values()) and len(payload) == len(model.nola) * 2
    else:
        assert payload["codes"].dtype == torch.uint8 and payload["codes"].numel() == -(-rows * 16 * 3 // 8)
        assert payload["scale"].dtype == torch.float32 and payload["scale"].numel() == rows
        alpha = next(iter(model.nola.values())).alpha
        assert torch.equal(next(iter(fresh.nola.values())).alpha, fake_quant(alpha, 3))
    header = json.loads((tmp_path / "adapter" / CONFIG_FILE).read_text())
    assert header["base_model"]["class"] == type(base).__name__ and header["target_modules"] == targets
    merged = copy.deepcopy(fresh)
    set_merged(merged, True)
    nola.load_adapter(merged, tmp_path / "adapter")  # fills an adapted model, merged or not
    assert (_logits(merged, batch) - expected).abs().max() <= 1e-5


def test_bf16_base_trains_float32_coefficients_merges_and_round_trips(tmp_path):
    base, batch = _llama().to(torch.bfloat16), _llama_batch()
    model = copy.deepcopy(base)
    nola.inject(model, _nola(qbits=3), PROJECTIONS)
    _randomise(model)
    model(**batch).loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.dtype == torch.float32 and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name
    effect = (_logits(model, batch) - _logits(base, batch)).float().abs().max()
    unmerged = _logits(model, batch)
    loaded = nola.load_adapter(copy.deepcopy(base), nola.save_adapter(model, tmp_path / "bf16"))
    assert torch.equal(_logits(loaded, batch), unmerged)
    set_merged(model, True)  # ΔW is rounded into bf16 weights: close, not equal
    assert (_logits(model, batch) - unmerged).float().abs().max() < 0.1 * effect


def _one_line_error(model, folder) -> str:
    with pytest.raises(UsageError) as info:
        nola.load_adapter(model, folder)
    message = str(info.value)
    assert "\n" not in message
    return message


def _rewrite_payload(folder, edit) -> None:
    """Edit the tensors of a saved adapter and re-record the payload and content hashes, as another tool would."""
    tensors = edit(load_safetensors((folder / WEIGHTS_FILE).read_bytes()))
    payload = save_safetensors(tensors)
    (folder / WEIGHTS_FILE).write_bytes(payload)
    header = json.loads((folder / CONFIG_FILE).read_text())
    header["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    del header[CONTENT_KEY]
    header[CONTENT_KEY] = content_digest({"header": header, "tensors": tensors})
    (folder / CONFIG_FILE).write_text(json.dumps(header))


def test_wrong_base_changed_payload_and_missing_or_unexpected_keys_fail_in_one_line(tmp_path):
    model, _ = _adapted("llama")
    folder = nola.save_adapter(model, tmp_path / "a")
    assert "trained on" in _one_line_error(_llama(intermediate=64), folder)  # same class, other config
    assert "LlamaForCausalLM" in _one_line_error(_vit(), folder)
    assert "not found" in _one_line_error(_llama(), tmp_path / "nowhere")
    (folder / WEIGHTS_FILE).write_bytes((folder / WEIGHTS_FILE).read_bytes()[:-4] + b"\0\0\0\0")
    assert "SHA-256" in _one_line_error(_llama(), folder)
    for edit, word in [(lambda t: {k: v for k, v in t.items() if k != "nola.v_proj.beta"}, "missing"),
                       (lambda t: {**t, "nola.lm_head.alpha": torch.zeros(2, 16)}, "unexpected")]:
        folder = nola.save_adapter(model, tmp_path / word)
        _rewrite_payload(folder, edit)
        message = _one_line_error(_llama(), folder)
        assert word in message and CONFIG_FILE in message
    other, _ = _adapted("llama", seed=6)
    assert "seed" in _one_line_error(other, nola.save_adapter(model, tmp_path / "b"))


def test_the_base_identity_is_of_the_kind_the_folder_records(tmp_path):
    """A folder identifies its base by config (the default; format version 1, no ``kind``, as before) or
    by file (path + SHA-256: version 2); loading compares the kind's fields and says the caller's fix."""
    model, _ = _adapted("llama")
    by_config = json.loads((nola.save_adapter(model, tmp_path / "c") / CONFIG_FILE).read_text())
    assert by_config["format_version"] == 1
    assert set(by_config["base_model"]) == {"class", "config_sha256", "name_or_path"}
    base = file_identity("base.bin", "ab" * 32)
    folder = nola.save_adapter(model, tmp_path / "f", base, step=7)
    header = json.loads((folder / CONFIG_FILE).read_text())
    assert header["format_version"] == 2 and header["base_model"] == base and header["step"] == 7
    assert "identifies its base by file (the base file base.bin (sha256 abababababab)), the base at hand by config" \
        in _one_line_error(_llama(), folder)
    loaded = nola.load_adapter(_llama(), folder, base=file_identity("moved/base.bin", "ab" * 32))  # the path may move
    assert torch.equal(loaded.nola.q_proj.alpha, model.nola.q_proj.alpha)
    with pytest.raises(UsageError, match=r"saved for the base file base.bin \(sha256 abababababab\), not the base file "
                                         r"other.bin \(sha256 cdcdcdcdcdcd\): pass --base the file it was trained on$"):
        nola.load_adapter(_llama(), folder, base=file_identity("other.bin", "cd" * 32),
                          fix="pass --base the file it was trained on")
    header["base_model"] = {"kind": "tokenizer", "sha256": "ab" * 32}
    with pytest.raises(UsageError, match="kind 'tokenizer' is unknown to this nola .*: upgrade nola"):
        check_base(header["base_model"], base, folder, "unused")


def test_lora_on_gpt2_equals_the_fork_and_on_llama_merges_saves_and_loads(tmp_path):
    hf = _gpt2()
    lora = LoRAConfig(dim=2, alpha=8.0)
    fork = GPT2LMModel(ForkConfig(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4), lora=lora).eval()
    replaced = nola.inject_lora(hf, lora, ["attn_q", "attn_v"])
    assert replaced == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "lora_B" in name:
                p.normal_()
    fork.load_state_dict({k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"})
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    assert (_logits(hf, {"input_ids": ids}) - fork(ids)[0].detach()).abs().max() <= 1e-5
    mlp = _gpt2()
    base = _logits(mlp, {"input_ids": ids})
    nola.inject_lora(mlp, lora, ["mlp_fc", "mlp_proj"])  # whole Conv1D: loralib.Linear, fan_in_fan_out
    with torch.no_grad():
        for name, p in mlp.named_parameters():
            if "lora_B" in name:
                p.normal_()
    unmerged = _logits(mlp, {"input_ids": ids})
    set_merged(mlp, True)
    assert (unmerged - base).abs().max() > 1e-2
    assert (_logits(mlp, {"input_ids": ids}) - unmerged).abs().max() <= 1e-5

    model, batch = MODELS["llama"][0](), _llama_batch()
    base = copy.deepcopy(model)
    nola.inject_lora(model, lora, PROJECTIONS)
    cfg = model.config
    kv = cfg.num_key_value_heads * cfg.hidden_size // cfg.num_attention_heads
    h, i = cfg.hidden_size, cfg.intermediate_size
    widths = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]
    assert count_trainable(model) == cfg.num_hidden_layers * sum(2 * (a + b) for a, b in widths)
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    unmerged = _logits(model, batch)
    set_merged(model, True)
    assert (_logits(model, batch) - unmerged).abs().max() <= 1e-5
    set_merged(model, False)
    loaded = nola.load_adapter(base, nola.save_adapter(model, tmp_path / "lora"))
    assert torch.equal(_logits(loaded, batch), unmerged)


def test_llama2_70b_counts_reproduce_the_headline():
    config = llama2_config("70B")
    assert count_nola(config, 512) == 80 * 7 * 2 * 512 == 573_440
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    closed = layers * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 3)  # r = 1: Σ d_in + d_out
    assert count_lora(config, 1) == closed == 12_943_360
