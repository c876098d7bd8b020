"""NOLA as a PEFT method (`nola.peft`): registration, the same numbers as `nola.inject`, PEFT's save /
load / merge / unload / disable / named adapters, qNOLA's packed folder, and the HF Trainer — on tiny
random LLaMA, GPT-2 (Conv1D) and ViT models, and on SmolLM2-135M (slow)."""
from __future__ import annotations

import copy
import json
import struct
import warnings
from pathlib import Path

import peft
import pytest
import torch
from peft import PeftConfig, PeftModel, PeftType, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Trainer,
                          TrainingArguments, ViTConfig, ViTForImageClassification)
from transformers.utils import logging as hf_logging

import nola
from nola.errors import NOLAError
from nola.peft import PEFT_VERSION, NolaConfig, NolaModel, add_peft_type

hf_logging.set_verbosity_error()
VOCAB = 64
K = 16


def _llama(intermediate: int = 48) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=intermediate,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=32)).eval()


def _gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)).eval()


def _vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                               intermediate_size=48, image_size=16, patch_size=4,
                                               num_labels=3, initializer_range=0.2)).eval()


def _ids():
    return {"input_ids": torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(1))}


def _pixels():
    return {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))}


# name -> (base, targets, inputs). GPT-2's c_proj is 32->32 (attention) and 128->32 (MLP): two roles.
MODELS = {
    "llama": (_llama, ["q_proj", "k_proj", "v_proj", "down_proj"], _ids),
    "gpt2": (_gpt2, ["c_attn", "c_proj"], _ids),
    "vit": (_vit, ["q_proj", "v_proj"], _pixels),
}


def _config(targets, **kw) -> NolaConfig:
    return NolaConfig(**{"r": 4, "num_basis": K, "c": 2.0, "seed": 5, "target_modules": targets, **kw})


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def _layers(model) -> list[BaseTunerLayer]:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def _randomise(model, seed: int = 2) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (p for n, p in model.named_parameters() if ".nola_" in n):
            p.copy_(torch.randn(p.shape, generator=gen) / K)


def _adapted(name: str, seed: int = 5, **kw):
    build, targets, inputs = MODELS[name]
    base = build()
    model = get_peft_model(copy.deepcopy(base), _config(targets, seed=seed, **kw))
    _randomise(model, seed)
    return base, model, inputs()


def test_registered_with_the_pinned_peft_and_the_type_round_trips(tmp_path):
    assert peft.__version__ == PEFT_VERSION, (
        f"nola.peft is written for peft=={PEFT_VERSION}, found {peft.__version__}: re-check add_peft_type "
        f"and the state-dict hooks against the new PEFT, then move the pin in requirements.lock and here")
    assert f"peft=={PEFT_VERSION}" in (Path(__file__).parents[1] / "requirements.lock").read_text().split()
    assert PeftType("NOLA") is PeftType.NOLA is PeftType["NOLA"] is add_peft_type("NOLA")
    assert PeftType.NOLA == "NOLA" and PeftType.NOLA in list(PeftType) and len(set(PeftType)) == len(list(PeftType))
    _, model, _ = _adapted("llama")
    model.save_pretrained(tmp_path)
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert type(loaded) is NolaConfig and loaded.peft_type is PeftType.NOLA and loaded.num_basis == K
    assert isinstance(model.base_model, NolaModel)


@pytest.mark.parametrize("name", MODELS)
def test_same_logits_as_nola_inject_and_trainable_count_is_the_formula(name, capsys):
    build, targets, inputs = MODELS[name]
    base, batch = build(), inputs()
    model = get_peft_model(copy.deepcopy(base), _config(targets))
    _randomise(model)
    native = copy.deepcopy(base)
    handle = nola.inject(native, nola.NOLAConfig(rank=4, num_basis=K, c=2.0, seed=5, target_modules=targets))
    roles = model.base_model.nola_bases["default"]
    assert set(roles) == set(handle)  # the same roles: GPT-2's c_proj becomes c_proj_32x32 and c_proj_128x32
    with torch.no_grad():
        for role, group in handle.items():
            group.alpha.copy_(torch.stack([layer.nola_alpha["default"] for layer in roles[role].layers]))
            group.beta.copy_(torch.stack([layer.nola_beta["default"] for layer in roles[role].layers]))
    ours, theirs = _logits(model, batch), _logits(native, batch)
    assert (ours - theirs).abs().max() <= 1e-5
    assert (ours - _logits(base, batch)).abs().max() > 1e-3  # the adapter changes the output
    layers = len(_layers(model))
    assert layers == sum(g.num_layers for g in handle.values())
    trainable, total = 2 * K * layers, sum(p.numel() for p in base.parameters()) + 2 * K * layers
    assert model.get_nb_trainable_parameters() == (trainable, total)
    model.print_trainable_parameters()
    assert capsys.readouterr().out.strip() == (
        f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("qbits", [None, 3])
def test_save_then_from_pretrained_is_bit_exact_and_loads_for_inference(tmp_path, name, qbits):
    base, model, batch = _adapted(name, qbits=qbits)
    expected = _logits(model, batch)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "README.md") == [
        "adapter_config.json", "adapter_model.safetensors"]
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    assert torch.equal(_logits(loaded, batch), expected)
    assert not any(p.requires_grad for p in loaded.parameters())  # inference unless is_trainable=True
    again = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path, is_trainable=True)
    assert {n for n, p in again.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad}


def _packed_size(n_coefficients: int, vectors: int, bits: int) -> int:
    return -(-n_coefficients * bits // 8) + 4 * vectors  # the b-bit codes, one float32 scale per vector


def test_a_3bit_qnola_folder_holds_the_packed_codes_and_nothing_else(tmp_path):
    _, model, _ = _adapted("llama", qbits=3)
    model.save_pretrained(tmp_path)
    data = (tmp_path / "adapter_model.safetensors").read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + header_len])
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert set(tensors) == {"nola_codes", "nola_scales"} and tensors["nola_codes"].dtype == torch.uint8
    vectors = 2 * len(_layers(model))
    assert len(data) - 8 - header_len == _packed_size(vectors * K, vectors, 3)
    assert set(header) - {"__metadata__"} == {"nola_codes", "nola_scales"}
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["qbits"] == 3 and config["seed"] == 5 and config["peft_type"] == "NOLA"


def test_wrong_base_missing_or_unexpected_keys_are_errors(tmp_path):
    base, model, _ = _adapted("llama")
    model.save_pretrained(tmp_path / "a")
    with pytest.raises(NOLAError, match="trained on"):
        PeftModel.from_pretrained(_llama(intermediate=64), tmp_path / "a")
    tensors = load_file(tmp_path / "a" / "adapter_model.safetensors")
    dropped = sorted(k for k in tensors if "v_proj" in k)[0]
    for edit, word in [(lambda t: {k: v for k, v in t.items() if k != dropped}, "missing"),
                       (lambda t: {**t, "base_model.model.lm_head.nola_alpha": torch.zeros(K)}, "unexpected")]:
        folder = tmp_path / word
        folder.mkdir()
        (folder / "adapter_config.json").write_text((tmp_path / "a" / "adapter_config.json").read_text())
        save_file(edit(dict(tensors)), folder / "adapter_model.safetensors")
        with pytest.raises(NOLAError, match=word):
            PeftModel.from_pretrained(copy.deepcopy(base), folder)
    _, quantised, _ = _adapted("llama", qbits=3)
    quantised.save_pretrained(tmp_path / "q")
    packed = load_file(tmp_path / "q" / "adapter_model.safetensors")
    save_file({"nola_codes": packed["nola_codes"]}, tmp_path / "q" / "adapter_model.safetensors")
    with pytest.raises(NOLAError, match="nola_scales"):
        PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "q")


@pytest.mark.parametrize("name", MODELS)
def test_merge_and_unload_is_a_plain_model_with_the_same_logits(name):
    base, model, batch = _adapted(name)
    unmerged = _logits(model, batch)
    merged = model.merge_and_unload()
    assert type(merged) is type(base) and not _layers(merged)
    assert merged.state_dict().keys() == base.state_dict().keys()
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in merged.modules())
    assert (_logits(merged, batch) - unmerged).abs().max() <= 1e-5


def test_disable_adapter_and_unload_give_the_base_back():
    base, model, batch = _adapted("llama")
    adapted, plain = _logits(model, batch), _logits(base, batch)
    with model.disable_adapter():
        assert torch.equal(_logits(model, batch), plain)
    assert torch.equal(_logits(model, batch), adapted)
    model.merge_adapter()
    with model.disable_adapter():  # a merged adapter is taken out first
        assert (_logits(model, batch) - plain).abs().max() <= 1e-5
    unloaded = model.unload()
    assert type(unloaded) is type(base) and (_logits(unloaded, batch) - plain).abs().max() <= 1e-5


def test_two_named_adapters_load_and_switch(tmp_path):
    base, first, batch = _adapted("llama", seed=5)
    _, second, _ = _adapted("llama", seed=7, qbits=3)
    first.save_pretrained(tmp_path / "first")
    second.save_pretrained(tmp_path / "second")
    expected = {"first": _logits(first, batch), "second": _logits(second, batch)}
    both = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "first", adapter_name="first")
    both.load_adapter(tmp_path / "second", adapter_name="second")
    for name in ("second", "first", "second"):
        both.set_adapter(name)
        assert torch.equal(_logits(both, batch), expected[name]), name
    both.delete_adapter("first")
    assert set(both.base_model.nola_bases) == {"second"}


@pytest.mark.parametrize("reentrant", [True, False])
def test_gradient_checkpointing_keeps_the_coefficient_gradients(reentrant):
    _, model, batch = _adapted("llama")
    reference = copy.deepcopy(model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    for m in (model, reference):
        m.train()
        m(**batch, labels=batch["input_ids"]).loss.backward()
    grads = {n: p.grad for n, p in reference.named_parameters() if p.requires_grad}
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.allclose(p.grad, grads[n], rtol=1e-5, atol=1e-9), n


class _Tokens(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.ids = torch.randint(0, VOCAB, (16, 8), generator=torch.Generator().manual_seed(3))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _train(model, out: Path, resume: Path | None = None) -> Trainer:
    args = TrainingArguments(output_dir=str(out), max_steps=4, save_steps=2, per_device_train_batch_size=4,
                             learning_rate=0.5, lr_scheduler_type="constant", report_to=[], use_cpu=True,
                             logging_steps=1, seed=0, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=_Tokens())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return trainer


def test_hf_trainer_lowers_the_loss_saves_only_the_adapter_and_resumes(tmp_path):
    base = _llama()
    batch = _Tokens()[slice(0, 16)]
    model = get_peft_model(copy.deepcopy(base), _config(["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        before = model(**batch).loss
    trainer = _train(model, tmp_path / "run")
    with torch.no_grad():
        after = model(**batch).loss
    assert after < before - 1e-3
    checkpoint = tmp_path / "run" / "checkpoint-2"
    weights = sorted(p.name for p in checkpoint.iterdir() if "model" in p.name or p.suffix == ".safetensors")
    assert weights == ["adapter_model.safetensors"]  # beside it only the trainer's optimizer / scheduler / RNG state
    assert all(".nola_" in k for k in load_file(checkpoint / "adapter_model.safetensors"))
    resumed = get_peft_model(copy.deepcopy(base), _config(["q_proj", "v_proj", "down_proj"]))
    again = _train(resumed, tmp_path / "resumed", resume=checkpoint)
    assert again.state.global_step == trainer.state.global_step == 4
    finished = dict(trainer.model.named_parameters())
    for n, p in again.model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p, finished[n], rtol=1e-6, atol=1e-8), n


@pytest.mark.slow
def test_smollm2_peft_equals_inject_saves_and_merges(smollm2_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    targets = ["q_proj", "v_proj"]
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    batch = {"input_ids": torch.tensor([[1, 28120, 905, 314, 253, 1789, 30, 2]])}
    model = get_peft_model(base, _config(targets, r=8, num_basis=1024, seed=3))
    _randomise(model, 3)
    ours = _logits(model, batch)
    model.save_pretrained(tmp_path)
    coefficients = {role: [torch.stack([getattr(layer, f)["default"].detach().clone() for layer in r.layers])
                           for f in ("nola_alpha", "nola_beta")]
                    for role, r in model.base_model.nola_bases["default"].items()}
    merged = model.merge_and_unload()
    assert (_logits(merged, batch) - ours).abs().max() <= 1e-4 * ours.abs().max()
    del merged, model
    native = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    handle = nola.inject(native, nola.NOLAConfig(rank=8, num_basis=1024, c=2.0, seed=3), targets)
    with torch.no_grad():
        for role, (alpha, beta) in coefficients.items():
            handle[role].alpha.copy_(alpha)
            handle[role].beta.copy_(beta)
    assert (_logits(native, batch) - ours).abs().max() <= 1e-5 * max(1.0, ours.abs().max())
    bare = handle.unload()
    assert torch.equal(_logits(PeftModel.from_pretrained(bare, tmp_path), batch), ours)


@pytest.mark.slow
def test_the_readme_trainer_example_runs_on_smollm2(smollm2_dir, tmp_path, monkeypatch):
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    code = text.split("\n## NOLA on any model\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert 'path = "pretrained_checkpoints/smollm2-135m-instruct"' in code
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code.replace("pretrained_checkpoints/smollm2-135m-instruct", str(smollm2_dir)), "README", "exec"),
             scope)
    history = [row["loss"] for row in scope["trainer"].state.log_history if "loss" in row]
    assert history and history[-1] < history[0]
    weights = sorted(p.name for p in (tmp_path / "smollm2-nola" / "checkpoint-5").iterdir() if "model" in p.name)
    assert weights == ["adapter_model.safetensors"]
    assert type(scope["merged"]).__name__ == "LlamaForCausalLM"


def test_kept_factors_follow_a_change_of_any_one_layer(tmp_path):
    base, model, batch = _adapted("llama")
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)  # frozen: factors kept between calls
    before = _logits(loaded, batch)
    role = loaded.base_model.nola_bases["default"]["down_proj"]
    with torch.no_grad():
        role.layers[-1].nola_beta["default"].mul_(3)  # the last layer only: each layer checks its own
    after = _logits(loaded, batch)
    assert not torch.equal(after, before) and torch.equal(after, _logits(copy.deepcopy(loaded), batch))
