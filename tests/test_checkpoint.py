"""Adapter checkpoints: what the adapter folder stores, round trips, rebuilding from it, its guards, and
the pickled ``model.<step>.pt`` adapter files of earlier versions (``tests/fixtures/legacy_gpt2``: files
written by that code, with the logits it built from them; ``tests/legacy_adapter.py``: its writer)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nola.gpt2.build import build_from_flags
from nola.gpt2.checkpoint import adapter_tensors, read_checkpoint, save_checkpoint
from nola.errors import UsageError
from nola.fileio import sha256_file
from nola.hf_adapter import CONFIG_FILE, WEIGHTS_FILE
from nola.quant import fake_quant
from tests.legacy_adapter import save_pt_adapter

LEGACY = Path(__file__).parent / "fixtures" / "legacy_gpt2"

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
    folder, size = save_checkpoint(built.model, tmp_path, built.base_path, built.base_sha256, step=10)
    assert folder == tmp_path / "model.10" and sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert size == sum(p.stat().st_size for p in folder.iterdir())
    header = json.loads((folder / CONFIG_FILE).read_text())
    base = str(tiny_gpt2 / "pytorch_model.bin")
    assert header["format"] == "nola-hf-adapter" and header["format_version"] == 2 and header["step"] == 10
    assert {k: v for k, v in header["base_model"].items() if k != "model_config"} == {
        "kind": "file", "path": base, "sha256": sha256_file(base)}
    assert header["base_model"]["model_config"] == built.model.config.to_dict()
    ckpt = read_checkpoint(folder)
    assert ckpt["base"] == {"path": base, "sha256": sha256_file(base)} and ckpt["step"] == 10
    assert not any(k.startswith("transformer.") and "lora_" not in k for k in ckpt["tensors"])
    rebuilt = build_from_flags(("--model_card", str(tiny_gpt2 / "card.json"), "--init_checkpoint", str(folder)), CPU)
    assert rebuilt.step == 10
    ids = torch.randint(0, 50257, (2, 7))
    with torch.no_grad():
        expected = built.model.eval()(ids)[0]
        got = rebuilt.model.eval()(ids)[0]
    assert torch.allclose(expected, got, atol=1e-5)
    stored = load_file(folder / WEIGHTS_FILE)
    if "--qnola" in flags:
        assert sorted(stored) == ["codes", "scale"] and header["config"]["qbits"] == 3
        assert stored["scale"].shape == (4 * 2,)
        assert stored["codes"].dtype == torch.uint8 and stored["codes"].numel() == (4 * 2 * 50 * 3 + 7) // 8
        assert torch.allclose(rebuilt.model.nola.attn_q.alpha, fake_quant(built.model.nola.attn_q.alpha, 3), atol=1e-7)
    else:
        assert all(torch.equal(stored[k], v) for k, v in built.model.adapter_state().items())
    if "--nola_rank" in flags:
        assert header["config"]["seed"] == 7 and len(header["roles"]["attn_q"]["seeds"]["A"]) == 1
    else:
        assert header["adapter"] == "lora" and header["target_modules"] == ["attn_q", "attn_v"]


@pytest.mark.parametrize("name", ["nola", "qnola", "lora"])
def test_adapter_files_of_earlier_versions_load_to_the_model_they_built(tmp_path, name):
    """The fixture's files were written by the pickled writer; built from each, today's code gives the
    logits that code gave (to float32 rounding: the BLAS kernels differ with the thread count and the
    CPU); saved again as a folder and rebuilt, the same logits bit for bit."""
    recorded = json.loads((LEGACY / "logits.json").read_text())
    ids = torch.tensor(recorded["input_ids"])
    argv = ("--model_card", str(LEGACY / "card.json"), "--base_checkpoint", str(LEGACY / "base.bin"))
    old = build_from_flags((*argv, "--init_checkpoint", str(LEGACY / f"{name}.5.pt")), CPU)
    assert old.step == 5 and read_checkpoint(LEGACY / f"{name}.5.pt")["format"] == "nola-adapter"
    folder, _ = save_checkpoint(old.model, tmp_path, str(LEGACY / "base.bin"), old.base_sha256, old.step)
    again = build_from_flags((*argv[:2], "--init_checkpoint", str(folder)), CPU)
    with torch.no_grad():
        logits_old, logits_again = (built.model.eval()(ids)[0][:, -1, :8] for built in (old, again))
    assert torch.equal(logits_old, logits_again)
    torch.testing.assert_close(logits_old, torch.tensor(recorded["logits"][name]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flags", [NOLA + ["--qnola", "--qbits", "3"], ["--lora_dim", "2", "--lora_alpha", "16"]])
def test_old_file_and_folder_of_one_adapter_hold_the_same_tensors(tmp_path, tiny_gpt2, flags):
    built = _trained(tiny_gpt2, *flags)
    save_pt_adapter(built.model, tmp_path / "model.4.pt", built.base_path, built.base_sha256, step=4)
    folder, _ = save_checkpoint(built.model, tmp_path, built.base_path, built.base_sha256, step=4)
    old, new = read_checkpoint(tmp_path / "model.4.pt"), read_checkpoint(folder)
    a, b = adapter_tensors(old), adapter_tensors(new)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert {k: old[k] for k in ("adapter", "config", "model_config", "base", "step")} == \
        {k: new[k] for k in ("adapter", "config", "model_config", "base", "step")}


def test_the_papers_pt_name_reads_the_adapter_folder_saved_for_it(tmp_path, tiny_gpt2, caplog):
    """The paper's gpt2_beam.py command names model.26289.pt; gpt2_ft.py saved model.26289/: the same
    model is built from either name, and the log says which folder was read."""
    built = _trained(tiny_gpt2, *NOLA)
    save_checkpoint(built.model, tmp_path, built.base_path, built.base_sha256, step=26289)
    card = ("--model_card", str(tiny_gpt2 / "card.json"))
    logger = logging.getLogger("nola")  # nola's loggers do not propagate to the root, where caplog listens
    logger.addHandler(caplog.handler)
    try:
        by_name = build_from_flags((*card, "--init_checkpoint", str(tmp_path / "model.26289.pt")), CPU)
    finally:
        logger.removeHandler(caplog.handler)
    assert f"reading the adapter folder {tmp_path / 'model.26289'}/" in caplog.text
    by_folder = build_from_flags((*card, "--init_checkpoint", str(tmp_path / "model.26289")), CPU)
    a, b = by_name.model.adapter_state(), by_folder.model.adapter_state()
    assert by_name.step == 26289 and sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UsageError, match="model.26288.pt not found"):  # no folder either: the file is missing
        build_from_flags((*card, "--init_checkpoint", str(tmp_path / "model.26288.pt")), CPU)


def test_quantised_file_is_smaller_than_float(tmp_path, tiny_gpt2):
    sizes = {}
    wide = ["--nola_rank", "4", "--nola_qv", "--nola_num_basis", "1000"]
    for name, flags in (("fp32", wide), ("q3", wide + ["--qnola", "--qbits", "3"])):
        built = _trained(tiny_gpt2, *flags)
        sizes[name] = save_checkpoint(built.model, tmp_path / name, None, None, 0)[1]
    coeffs = 2 * 2 * 2 * 1000  # layers x roles x factors x k
    # The payload shrinks from 4 bytes to 3 bits a coefficient; record overhead stays under 2 KB.
    assert coeffs * (4 - 3 / 8) - 2048 <= sizes["fp32"] - sizes["q3"] <= coeffs * (4 - 3 / 8) + 2048


def test_full_checkpoint_loads_with_its_adapter(tmp_path, tiny_gpt2):
    built = _trained(tiny_gpt2, *NOLA)
    path, size = save_checkpoint(built.model, tmp_path, None, None, 3, full=True)
    assert path == tmp_path / "model.3.pt" and size == path.stat().st_size and not (tmp_path / "model.3").exists()
    assert "model_state_dict" in read_checkpoint(path)
    rebuilt = build_from_flags(("--model_card", str(tiny_gpt2 / "card.json"), "--init_checkpoint", str(path)), CPU)
    assert torch.equal(rebuilt.model.nola.attn_v.beta, built.model.nola.attn_v.beta)


@pytest.mark.parametrize("layout", ["folder", "old file"])
def test_guards_moved_base_sha_mismatch_contradicting_flags_and_card(tmp_path, tiny_gpt2, layout):
    import shutil

    base = tmp_path / "base.bin"
    shutil.copy(tiny_gpt2 / "pytorch_model.bin", base)
    built = build_from_flags(("--model_card", str(tiny_gpt2 / "card.json"), "--init_checkpoint", str(base), *NOLA), CPU)
    if layout == "folder":
        adapter = save_checkpoint(built.model, tmp_path, built.base_path, built.base_sha256, 0)[0]
    else:
        adapter = tmp_path / "model.0.pt"
        save_pt_adapter(built.model, adapter, built.base_path, built.base_sha256)
    card = str(tiny_gpt2 / "card.json")
    moved = tmp_path / "moved.bin"
    base.rename(moved)
    with pytest.raises(UsageError, match="--base_checkpoint"):
        build_from_flags(("--model_card", card, "--init_checkpoint", str(adapter)), CPU)
    build_from_flags(("--model_card", card, "--init_checkpoint", str(adapter), "--base_checkpoint", str(moved)), CPU)
    other = torch.load(moved, weights_only=True)
    other["wte.weight"] = other["wte.weight"] + 1
    torch.save(other, tmp_path / "other.bin")
    with pytest.raises(UsageError, match=r"saved for the base file .*, not the base file .*other.bin .*: pass "
                                         r"--base_checkpoint PATH to the exact GPT-2 file it was trained on"):
        build_from_flags(("--model_card", card, "--init_checkpoint", str(adapter),
                          "--base_checkpoint", str(tmp_path / "other.bin")), CPU)
    args = ["--model_card", card, "--init_checkpoint", str(adapter), "--base_checkpoint", str(moved)]
    with pytest.raises(UsageError, match="--nola_rank 8 contradicts the checkpoint"):
        build_from_flags((*args, "--nola_rank", "8"), CPU)
    with pytest.raises(UsageError, match="LoRA"):
        build_from_flags((*args, "--lora_dim", "4"), CPU)
    build_from_flags((*args, "--nola_rank", "4", "--nola_qv", "--nola_c", "2.0"), CPU)
    with pytest.raises(UsageError, match="--model_card"):
        build_from_flags(("--model_card", "gpt2.sm", "--init_checkpoint", str(adapter)), CPU)
