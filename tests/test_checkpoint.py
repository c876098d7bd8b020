"""Adapter checkpoints: what they store, round trips, rebuilding from the file, and its guards."""
from __future__ import annotations


import pytest
import torch

from nola.gpt2.build import build_from_flags
from nola.gpt2.checkpoint import read_checkpoint, save_adapter
from nola.errors import UsageError
from nola.fileio import sha256_file
from nola.quant import fake_quant

CPU = torch.device("cpu")
NOLA = ["--nola_rank", "4", "--nola_qv", "--nola_num_basis", "50", "--nola_c", "2.0", "--nola_seed", "7"]


def _trained(tiny_gpt2, *flags):
    built = build_from_flags(("--model_card", str(tiny_gpt2 / "card.json"),
                              "--init_checkpoint", str(tiny_gpt2 / "pytorch_model.bin"), *flags), CPU)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in built.model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)
    return built


@pytest.mark.parametrize("flags", [NOLA, NOLA + ["--qnola", "--qbits", "3"], ["--lora_dim", "2", "--lora_alpha", "16"]])
def test_adapter_round_trip_rebuilds_the_same_model(tmp_path, tiny_gpt2, flags):
    built = _trained(tiny_gpt2, *flags)
    path = tmp_path / "model.10.pt"
    size = save_adapter(built.model, path, built.base_path, built.base_sha256, step=10)
    assert size == path.stat().st_size
    ckpt = read_checkpoint(path)
    assert ckpt["base"] == {"path": str(tiny_gpt2 / "pytorch_model.bin"), "sha256": sha256_file(tiny_gpt2 / "pytorch_model.bin")}
    assert ckpt["step"] == 10 and "model_state_dict" not in ckpt
    assert not any(k.startswith("transformer.") and "lora_" not in k for k in ckpt["tensors"])
    rebuilt = build_from_flags(("--model_card", str(tiny_gpt2 / "card.json"), "--init_checkpoint", str(path)), CPU)
    assert rebuilt.step == 10
    ids = torch.randint(0, 50257, (2, 7))
    with torch.no_grad():
        expected = built.model.eval()(ids)[0]
        got = rebuilt.model.eval()(ids)[0]
    assert torch.allclose(expected, got, atol=1e-5)
    if "--qnola" in flags:
        packed = ckpt["quantised"]
        assert ckpt["tensors"] == {} and packed["bits"] == 3 and packed["scale"].shape == (4 * 2,)
        assert packed["codes"].dtype == torch.uint8 and packed["codes"].numel() == (4 * 2 * 50 * 3 + 7) // 8
        assert torch.allclose(rebuilt.model.nola.attn_q.alpha, fake_quant(built.model.nola.attn_q.alpha, 3), atol=1e-7)
    if "--nola_rank" in flags:
        assert ckpt["config"]["seed"] == 7 and len(ckpt["seeds"]["attn_q"]["A"]) == 1


def test_quantised_file_is_smaller_than_float(tmp_path, tiny_gpt2):
    sizes = {}
    wide = ["--nola_rank", "4", "--nola_qv", "--nola_num_basis", "1000"]
    for name, flags in (("fp32", wide), ("q3", wide + ["--qnola", "--qbits", "3"])):
        built = _trained(tiny_gpt2, *flags)
        sizes[name] = save_adapter(built.model, tmp_path / f"{name}.pt")
    coeffs = 2 * 2 * 2 * 1000  # layers x roles x factors x k
    # The payload shrinks from 4 bytes to 3 bits a coefficient; record overhead stays under 2 KB.
    assert coeffs * (4 - 3 / 8) - 2048 <= sizes["fp32"] - sizes["q3"] <= coeffs * (4 - 3 / 8) + 2048


def test_full_checkpoint_loads_with_its_adapter(tmp_path, tiny_gpt2):
    built = _trained(tiny_gpt2, *NOLA)
    save_adapter(built.model, tmp_path / "full.pt", full=True)
    rebuilt = build_from_flags(("--model_card", str(tiny_gpt2 / "card.json"), "--init_checkpoint", str(tmp_path / "full.pt")), CPU)
    assert torch.equal(rebuilt.model.nola.attn_v.beta, built.model.nola.attn_v.beta)


def test_guards_moved_base_sha_mismatch_contradicting_flags_and_card(tmp_path, tiny_gpt2):
    import shutil

    base = tmp_path / "base.bin"
    shutil.copy(tiny_gpt2 / "pytorch_model.bin", base)
    built = build_from_flags(("--model_card", str(tiny_gpt2 / "card.json"), "--init_checkpoint", str(base), *NOLA), CPU)
    save_adapter(built.model, tmp_path / "a.pt", built.base_path, built.base_sha256)
    card = str(tiny_gpt2 / "card.json")
    moved = tmp_path / "moved.bin"
    base.rename(moved)
    with pytest.raises(UsageError, match="--base_checkpoint"):
        build_from_flags(("--model_card", card, "--init_checkpoint", str(tmp_path / "a.pt")), CPU)
    build_from_flags(("--model_card", card, "--init_checkpoint", str(tmp_path / "a.pt"), "--base_checkpoint", str(moved)), CPU)
    other = torch.load(moved, weights_only=True)
    other["wte.weight"] = other["wte.weight"] + 1
    torch.save(other, tmp_path / "other.bin")
    with pytest.raises(UsageError, match="SHA-256"):
        build_from_flags(("--model_card", card, "--init_checkpoint", str(tmp_path / "a.pt"),
                          "--base_checkpoint", str(tmp_path / "other.bin")), CPU)
    args = ["--model_card", card, "--init_checkpoint", str(tmp_path / "a.pt"), "--base_checkpoint", str(moved)]
    with pytest.raises(UsageError, match="--nola_rank 8 contradicts the checkpoint"):
        build_from_flags((*args, "--nola_rank", "8"), CPU)
    with pytest.raises(UsageError, match="LoRA"):
        build_from_flags((*args, "--lora_dim", "4"), CPU)
    build_from_flags((*args, "--nola_rank", "4", "--nola_qv", "--nola_c", "2.0"), CPU)
    with pytest.raises(UsageError, match="--model_card"):
        build_from_flags(("--model_card", "gpt2.sm", "--init_checkpoint", str(tmp_path / "a.pt")), CPU)
