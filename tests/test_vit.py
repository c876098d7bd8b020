"""k-shot ViT fine-tuning (src/vit_ft.py, nola.vit) on the toy ViT of timm's layout and image folders
the tests draw: the official k-shot choice rebuilt independently, the evaluation transform against
closed-form crops, the toy ViT against transformers' ViT, the adapters on timm's fused qkv against
the official vit/ formulas, merged = unmerged, the loss falls, resume is exact, the saved file holds
the trained tensors only. (timm and torchvision cannot be imported here: the timm models and the
official augmentation are checked on a GPU machine by scripts/vit/gpu_check.py.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from nola.adapters import set_merged
from nola.config import ViTConfig
from nola.vit.folder import kshot, scan
from nola.vit.model import TOY, ToyViT, build
from nola.vit.train import cosine_lr, step_items
from nola.vit.transforms import centre_crop, EvalTransform, resize_shorter, sample_seed, seeded
from scripts.vit.toy_images import draw_dataset, draw_split

REPO = Path(__file__).resolve().parents[1]


def official_kshot(root: Path, k: int, seed: int) -> list[tuple[str, int]]:
    """vit/dataloader.py's ImageFolderEx.__kshot__ over torchvision's ImageFolder listing, rebuilt:
    the global generator re-seeded before every class."""
    classes = sorted(d for d in os.listdir(root) if (root / d).is_dir())
    chosen = []
    for label, name in enumerate(classes):
        files = []
        for top, _, names in sorted(os.walk(root / name, followlinks=True)):
            files += [os.path.join(top, n) for n in sorted(names)
                      if os.path.splitext(n)[1].lower() in {".png", ".jpg", ".jpeg", ".bmp"}]
        torch.manual_seed(seed)
        chosen += [(files[j], label) for j in torch.randperm(len(files))[:k].tolist()]
    return chosen


def test_kshot_is_the_official_choice(tmp_path):
    root = draw_split(tmp_path / "train", [7, 12, 9, 30], size=(8, 8))
    (root / "class1" / "notes.txt").write_text("not an image")
    nested = root / "class2" / "more"
    nested.mkdir()
    Image.new("RGB", (8, 8)).save(nested / "A.PNG")
    (root / "class0" / "B.JPG").write_bytes((root / "class0" / "img000.png").read_bytes())
    images = scan(root, "--train_data_path")
    assert len(images.samples) == 7 + 12 + 10 + 30 + 1
    for k, seed in ((5, 0), (5, 3), (7, 1), (1, 2)):
        got = kshot(images, k, seed, "--kshot")
        assert [tuple(s) for s in got.samples] == official_kshot(root, k, seed)
        assert [label for _, label in got.samples] == [c for c in range(4) for _ in range(k)]


def test_eval_transform_closed_form():
    pixels = np.arange(40 * 50 * 3, dtype=np.int64).reshape(40, 50, 3) % 251
    image = Image.fromarray(pixels.astype(np.uint8))
    assert resize_shorter(image, 40) is image  # shorter side already right: unchanged
    assert resize_shorter(image, 32).size == (int(32 * 50 / 40), 32)
    assert resize_shorter(image.transpose(Image.Transpose.ROTATE_90), 32).size == (32, int(32 * 50 / 40))
    crop = np.array(centre_crop(image, 33))
    top, left = round(7 / 2), round(17 / 2)  # (40 - 33) / 2 = 3.5 -> 4 (round half to even), 8.5 -> 8
    assert (top, left) == (4, 8)
    np.testing.assert_array_equal(crop, pixels[4:37, 8:41].astype(np.uint8))
    # 36 x 40: resize 36 (32 * 8 // 7) is a no-op, crop 32 at (2, 4); then ToTensor + ImageNet normalisation.
    small = Image.fromarray(pixels[:36, :40].astype(np.uint8))
    out = EvalTransform(32)(small)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expect = (pixels[2:34, 4:36].astype(np.float32) / 255 - mean) / std
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expect, rtol=0, atol=1e-6)


def test_augmentation_seed_restores_the_global_streams():
    import random

    torch.manual_seed(5)
    random.seed(5)
    before = torch.get_rng_state(), random.getstate()
    with seeded(sample_seed(1, 2, 3)):
        first = torch.rand(3), random.random()
    with seeded(sample_seed(1, 2, 3)):
        again = torch.rand(3), random.random()
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert sample_seed(1, 2, 3) != sample_seed(1, 3, 2)


def test_schedule_and_data_order():
    torch_lrs = []
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=5e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 7, 1e-6)
    for _ in range(7):
        torch_lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert cosine_lr(0, 7, 5e-3, 1e-6) == 5e-3
    np.testing.assert_allclose([cosine_lr(e, 7, 5e-3, 1e-6) for e in range(7)], torch_lrs, rtol=1e-12)
    epoch0 = [i for s in range(3) for _, _, i in step_items(13, 4, 9, s)]  # 3 batches, 1 image dropped
    assert len(set(epoch0)) == 12 and {e for s in range(3, 6) for e, _, _ in step_items(13, 4, 9, s)} == {1}
    assert [p for s in range(3) for _, p, _ in step_items(13, 4, 9, s)] == list(range(12))


def test_toy_vit_is_transformers_vit():
    """The toy (timm's layout: fused qkv, pre-norm, class-token pooling) computes what transformers'
    ViTForImageClassification computes with the same weights."""
    from transformers import ViTConfig as HFConfig, ViTForImageClassification

    hf = ViTForImageClassification(HFConfig(
        hidden_size=TOY["embed_dim"], num_hidden_layers=TOY["depth"], num_attention_heads=TOY["num_heads"],
        intermediate_size=TOY["embed_dim"] * TOY["mlp_ratio"], image_size=TOY["img_size"],
        patch_size=TOY["patch_size"], num_labels=5, layer_norm_eps=1e-6)).eval()
    s = hf.state_dict()
    state = {"cls_token": s["vit.embeddings.cls_token"], "pos_embed": s["vit.embeddings.position_embeddings"],
             "norm.weight": s["vit.layernorm.weight"], "norm.bias": s["vit.layernorm.bias"],
             "head.weight": s["classifier.weight"], "head.bias": s["classifier.bias"]}
    for kind in ("weight", "bias"):
        state[f"patch_embed.proj.{kind}"] = s[f"vit.embeddings.patch_embeddings.projection.{kind}"]
        for i in range(TOY["depth"]):
            hf_layer = f"vit.layers.{i}."
            state[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [s[f"{hf_layer}attention.{p}_proj.{kind}"] for p in "qkv"])
            state[f"blocks.{i}.attn.proj.{kind}"] = s[f"{hf_layer}attention.o_proj.{kind}"]
            state[f"blocks.{i}.norm1.{kind}"] = s[f"{hf_layer}layernorm_before.{kind}"]
            state[f"blocks.{i}.norm2.{kind}"] = s[f"{hf_layer}layernorm_after.{kind}"]
            for fc in ("fc1", "fc2"):
                state[f"blocks.{i}.mlp.{fc}.{kind}"] = s[f"{hf_layer}mlp.{fc}.{kind}"]
    toy = ToyViT(**TOY, num_classes=5).eval()
    toy.load_state_dict(state, strict=True)
    x = torch.randn(3, 3, TOY["img_size"], TOY["img_size"])
    with torch.no_grad():
        torch.testing.assert_close(toy(x), hf(pixel_values=x).logits, rtol=1e-5, atol=1e-5)


def _cfg(train_type: str, **kw) -> ViTConfig:
    return ViTConfig(train_data_path="unused", vit="toy", train_type=train_type, **kw)


def test_lora_on_fused_qkv_is_the_official_formula():
    """vit/lora.py: qkv[..., :d] += x Aq^T Bq^T, qkv[..., -d:] += x Av^T Bv^T, unscaled; k untouched."""
    model, _ = build(_cfg("lora", rank=2), 3)
    d = TOY["embed_dim"]
    for block in model.blocks:
        torch.nn.init.normal_(block.attn.qkv.lora_B)
    x = torch.randn(2, 17, d)
    qkv = model.blocks[0].attn.qkv
    with torch.no_grad():
        got = qkv(x) - torch.nn.functional.linear(x, qkv.weight, qkv.bias)
        a, b = qkv.lora_A, qkv.lora_B
        torch.testing.assert_close(got[..., :d], x @ a[:2].T @ b[:d].T)
        torch.testing.assert_close(got[..., d:2 * d], torch.zeros_like(got[..., d:2 * d]))
        torch.testing.assert_close(got[..., 2 * d:], x @ a[2:].T @ b[d:].T)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {f"blocks.{i}.attn.qkv.lora_{m}" for i in range(2) for m in "AB"} | {"head.weight", "head.bias"}


@pytest.mark.parametrize("train_type,roles,columns", [("nola", ("qkv_q", "qkv_v"), ((0, 1), (2, 3))),
                                                     ("nola_mlp", ("mlp_fc1", "mlp_fc2"), None)])
def test_nola_is_the_official_formula(train_type, roles, columns):
    """vit/NOLA.py's NOLA2: out += (1/r) (x Σα_i A_i)(Σβ_j B_j) on its slice of the output, one basis
    per role shared by every block (the official torch.manual_seed(0) in every layer)."""
    model, _ = build(_cfg(train_type, rank=2, ka=8), 3)
    groups = model.nola
    assert set(groups) == set(roles)
    for group in groups.values():
        torch.nn.init.normal_(group.alpha)
        torch.nn.init.normal_(group.beta)
        assert group.seeds_a == (group.seeds_a[0],) and group.basis_a.shape == (8, group.d_in * 2)
        group.forget()  # what the model's forward pre-hook does
    d = TOY["embed_dim"]
    for block_index, block in enumerate(model.blocks):
        for role, (module, part) in zip(roles, ((block.attn.qkv, 0), (block.attn.qkv, 2)) if columns else
                                        ((block.mlp.fc1, 0), (block.mlp.fc2, 0))):
            group = groups[role]
            x = torch.randn(4, group.d_in)
            a = torch.einsum("b,bdr->dr", group.alpha[block_index], group.basis_a.view(8, group.d_in, 2))
            b = torch.einsum("b,brd->rd", group.beta[block_index], group.basis_b.view(8, 2, group.d_out))
            with torch.no_grad():
                delta = module(x) - torch.nn.functional.linear(x, module.weight, module.bias)
            cols = slice(part * d, (part + 1) * d) if columns else slice(None)
            torch.testing.assert_close(delta[:, cols], 0.5 * (x @ a) @ b, rtol=1e-5, atol=1e-6)
            if columns:
                assert delta[:, d:2 * d].abs().max() == 0


@pytest.mark.parametrize("train_type", ["nola", "nola_mlp", "lora"])
def test_merged_equals_unmerged(train_type):
    model, _ = build(_cfg(train_type, rank=2, ka=8), 3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad and "head" not in name:
                param.normal_()
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        set_merged(model, True)
        merged = model(x)
        set_merged(model, False)
        again = model(x)
    torch.testing.assert_close(merged, plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again, plain, rtol=1e-5, atol=1e-6)


def _argv(*args: object) -> list[str]:
    return [sys.executable, str(REPO / "src/vit_ft.py"), *map(str, args)]


def _run(*args: object) -> None:
    proc = subprocess.run(_argv(*args), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One uninterrupted NOLA-MLP run, the same run stopped at step 5 (mid-epoch) and resumed, and
    the same run with two data-loading processes."""
    root = tmp_path_factory.mktemp("vit")
    data = draw_dataset(root / "data", classes=3, train=7, val=4)
    flags = ("--train_data_path", data, "--vit", "toy", "--train_type", "nola_mlp", "--rank", 1, "--ka", 16,
             "--lr", 5e-3, "--batch_size", 4, "--epochs", 6, "--kshot", 5, "--kshot_seed", 1, "--augment", "none",
             "--num_workers", 0, "--device", "cpu", "--threads", 1)
    first = [subprocess.Popen(_argv(*flags, *extra), stderr=subprocess.PIPE, text=True)  # side by side
             for extra in (("--outdir", root / "whole"), ("--outdir", root / "split", "--stop_at_step", 5),
                           ("--outdir", root / "workers", "--num_workers", 2))]
    for proc in first:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert not (root / "split" / "trained.safetensors").exists()
    _run(*flags, "--resume", root / "split")
    return root


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def test_loss_falls(runs):
    rows = _rows(runs / "whole")
    assert [r["step"] for r in rows] == list(range(1, 19))  # 15 images / batch 4 -> 3 steps x 6 epochs
    first, last = np.mean([r["loss"] for r in rows[:3]]), np.mean([r["loss"] for r in rows[-3:]])
    assert last < first - 0.1, (first, last)
    result = json.loads((runs / "whole" / "result.json").read_text())
    assert result["val_images"] == 12 and result["train_images"] == 15
    assert result["trained_without_head"] == 2 * 2 * 2 * 16  # fc1, fc2 x 2 blocks x (alpha + beta) x k


def test_resume_is_exact(runs):
    assert _rows(runs / "split") == _rows(runs / "whole")
    whole, split = (json.loads((runs / f / "result.json").read_text()) for f in ("whole", "split"))
    assert split["accuracy"] == whole["accuracy"]
    split_file, whole_file = (runs / f / "trained.safetensors" for f in ("split", "whole"))
    assert split_file.read_bytes() == whole_file.read_bytes()


def test_loading_processes_change_nothing(runs):
    assert _rows(runs / "workers") == _rows(runs / "whole")


def test_saved_file_holds_the_trained_tensors_only(runs):
    with safe_open(runs / "whole" / "trained.safetensors", framework="pt") as f:
        keys = set(f.keys())
        header = json.loads(f.metadata()["nola_vit"])
        alpha = f.get_tensor("nola.mlp_fc1.alpha")
    assert keys == {f"nola.mlp_fc{i}.{c}" for i in (1, 2) for c in ("alpha", "beta")} | {"head.weight", "head.bias"}
    assert alpha.shape == (2, 16) and header["classes"] == ["class0", "class1", "class2"]
    assert header["train_type"] == "nola_mlp"


def test_param_table_vit_rows():
    """The project page's counts (without the head, in units of 2^10 / 2^20): ViT-L LoRA r=4 375K,
    LoRA r=1 94K, NOLA-MLP 94K and 47K, full fine-tuning 289M; timm's ViT-B/16 and ViT-L/16 have
    86,567,656 and 304,326,632 parameters with the 1000-class head."""
    from scripts.param_table import count_vit

    assert count_vit("ViT-L", "nola_mlp", rank=1, ka=1024) == 98_304 == 24 * 2 * 2 * 1024
    assert count_vit("ViT-L", "nola_mlp", rank=1, ka=512) == 49_152
    assert count_vit("ViT-L", "lora", rank=4) == 393_216 == 0.375 * 2 ** 20
    assert count_vit("ViT-L", "lora", rank=1) == 98_304
    assert round(count_vit("ViT-L", "full") / 2 ** 20) == 289
    assert count_vit("ViT-L", "full") + 1024 * 1000 + 1000 == 304_326_632
    assert count_vit("ViT-B", "full") + 768 * 1000 + 1000 == 86_567_656
