"""export_hf.py: the merged model as a transformers GPT-2 folder that loads and gives our logits."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from nola.gpt2.build import build_from_flags
from nola.gpt2.checkpoint import save_checkpoint
from tests.legacy_adapter import save_pt_adapter

CPU = torch.device("cpu")


def trained_checkpoint(tiny_gpt2, work, *flags, layout="folder"):
    """A checkpoint at step 7 in ``work`` with random, clearly non-zero adapter weights: the adapter
    folder (``layout`` "folder"), an earlier version's adapter file ("old") or a full state dict ("full")."""
    built = build_from_flags(("--model_card", str(tiny_gpt2 / "card.json"),
                              "--init_checkpoint", str(tiny_gpt2 / "pytorch_model.bin"), *flags), CPU)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in built.model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)
    if layout == "old":
        save_pt_adapter(built.model, work / "model.7.pt", built.base_path, built.base_sha256, step=7)
        return work / "model.7.pt"
    return save_checkpoint(built.model, work, built.base_path, built.base_sha256, 7, full=layout == "full")[0]


@pytest.mark.parametrize("flags", [
    ["--nola_rank", "4", "--nola_qv", "--nola_mlp", "--nola_num_basis", "64", "--qnola", "--qbits", "3"],
    ["--lora_dim", "2", "--lora_alpha", "16"],
], ids=["nola-3bit", "lora"])
@pytest.mark.parametrize("layout", ["folder", "old"])
def test_export_loads_in_transformers_with_our_logits(tmp_path, tiny_gpt2, repo, flags, layout):
    from transformers import GPT2LMHeadModel

    ckpt = trained_checkpoint(tiny_gpt2, tmp_path, *flags, layout=layout)
    out = tmp_path / "hf"
    card = str(tiny_gpt2 / "card.json")
    run = subprocess.run([sys.executable, str(repo / "src" / "export_hf.py"), "--model_card", card,
                          "--init_checkpoint", str(ckpt), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    hf, info = GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    ours = build_from_flags(("--model_card", card, "--init_checkpoint", str(ckpt)), CPU).model.eval()
    base = GPT2LMHeadModel.from_pretrained(tiny_gpt2).eval()
    ids = torch.randint(0, 50257, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ours(ids)[0]  # adapter applied on the fly, as in training
        got = hf.eval()(ids).logits
        untouched = base(ids).logits
    assert (got - expected).abs().max() <= 1e-5
    assert (untouched - expected).abs().max() > 1e-2  # the adapter really changed the model
    meta = json.loads((out / "config.json").read_text())["nola_export"]
    assert meta["step"] == 7 and meta["adapter"] == ("nola" if "--qnola" in flags else "lora")


def test_export_of_a_full_checkpoint_and_contradicting_flags(tmp_path, tiny_gpt2):
    from nola.errors import UsageError

    import export_hf

    flags = ["--nola_rank", "4", "--nola_qv", "--nola_num_basis", "64"]
    full = trained_checkpoint(tiny_gpt2, tmp_path, *flags, layout="full")
    card = str(tiny_gpt2 / "card.json")
    export_hf.main(["--model_card", card, "--init_checkpoint", str(full), "--out", str(tmp_path / "hf")])
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ours = build_from_flags(("--model_card", card, "--init_checkpoint", str(full)), CPU).model.eval()
    ids = torch.randint(0, 50257, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)[0]).abs().max() <= 1e-5
    with pytest.raises(UsageError, match="contradicts the checkpoint"):
        export_hf.main(["--model_card", card, "--init_checkpoint", str(full), "--nola_rank", "8",
                        "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()
