"""Trainable parameters of NOLA and LoRA on LLaMA-2 7B / 13B / 70B and on ViT-B / ViT-L, counted on
meta-device models.

Each model is built from its official shapes under ``torch.device("meta")`` (no weights, no
memory), NOLA is injected with ``nola.inject`` on all seven linear projections of every layer and
LoRA with ``nola.inject_lora`` on the same projections; the counts are the parameters that require
grad. 70B with 512 bases per factor is the paper's headline: 80 × 7 × 2 × 512 = 573,440.

The ViT rows put the adapters of ``src/vit_ft.py`` (:func:`nola.vit.model.add_adapter`: NOLA-MLP on
fc1 and fc2 of every block, LoRA on q and v of ``attn.qkv``) on a timm-layout ViT of ViT-B/16 and
ViT-L/16 sizes and count without the re-made head, as the NOLA project page does (its "K" are
counts / 2¹⁰): ViT-L NOLA-MLP at k = 1024 is 24 × 2 × 2 × 1024 = 98,304 ("94K").

    python scripts/param_table.py [--num_basis 512]
"""
from __future__ import annotations

import argparse
import datetime
import platform

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from nola.config import LoRAConfig, NOLAConfig
from nola.adapters import inject
from nola.lora_inject import inject_lora
from nola.config import ViTConfig
from nola.adapters import count_trainable
from nola.vit.model import ToyViT, add_adapter, head_count

# hidden, intermediate, layers, attention heads, key/value heads of meta-llama/Llama-2-*-hf.
LLAMA2 = {"7B": (4096, 11008, 32, 32, 32), "13B": (5120, 13824, 40, 40, 40), "70B": (8192, 28672, 80, 64, 8)}
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_RANKS = (1, 16)
# embed_dim, depth, heads of timm's vit_base_patch16_224 / vit_large_patch16_224 (patch 16, 224 px, MLP 4x).
VIT = {"ViT-B": (768, 12, 12), "ViT-L": (1024, 24, 16)}
VIT_NOLA_BASES = (1024, 512)
VIT_LORA_RANKS = (4, 1)


def llama2_config(size: str) -> LlamaConfig:
    hidden, intermediate, layers, heads, kv_heads = LLAMA2[size]
    return LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=32000)


def _meta_model(config: LlamaConfig) -> LlamaForCausalLM:
    with torch.device("meta"):
        return LlamaForCausalLM(config)


def count_nola(config: LlamaConfig, num_basis: int) -> int:
    """Trainable parameters with NOLA (on the fly: nothing materialised) on the seven projections."""
    model = _meta_model(config)
    inject(model, NOLAConfig(num_basis=num_basis, mode="onthefly"), PROJECTIONS)
    return count_trainable(model)


def count_lora(config: LlamaConfig, rank: int) -> int:
    """Trainable parameters with loralib's LoRA at ``rank`` on the seven projections."""
    model = _meta_model(config)
    inject_lora(model, LoRAConfig(dim=rank), PROJECTIONS)
    return count_trainable(model)


def count_vit(size: str, train_type: str, **settings) -> int:
    """Trained parameters of ``train_type`` on a meta-device ViT of ``size``, without the head."""
    dim, depth, heads = VIT[size]
    with torch.device("meta"):
        model = ToyViT(img_size=224, patch_size=16, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=4,
                       num_classes=100)
    add_adapter(model, ViTConfig(train_data_path="-", vit="toy", train_type=train_type, **settings))
    return count_trainable(model) - head_count(model)


def print_vit_table() -> None:
    nola = " | ".join(f"NOLA-MLP k={k}" for k in VIT_NOLA_BASES)
    lora = " | ".join(f"LoRA r={r} (q, v)" for r in VIT_LORA_RANKS)
    print(f"| ViT (without the head) | blocks | full | {nola} | {lora} |")
    print("|---|---:|---:|" + "---:|" * (len(VIT_NOLA_BASES) + len(VIT_LORA_RANKS)))
    for size in VIT:
        counts = [count_vit(size, "full")]
        counts += [count_vit(size, "nola_mlp", rank=1, ka=k) for k in VIT_NOLA_BASES]
        counts += [count_vit(size, "lora", rank=r) for r in VIT_LORA_RANKS]
        print(f"| {size}/16 | {VIT[size][1]} | " + " | ".join(f"{n:,}" for n in counts) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_basis", type=int, default=512, help="k = l, bases per factor (paper: 512)")
    args = parser.parse_args()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# {now}, {platform.node()} ({platform.machine()}, torch {torch.__version__}); meta device, no weights")
    lora_cols = " | ".join(f"LoRA r={r}" for r in LORA_RANKS)
    print(f"| model | layers | NOLA k=l={args.num_basis} | {lora_cols} | LoRA r=1 / NOLA |")
    print("|---|---:|---:|" + "---:|" * len(LORA_RANKS) + "---:|")
    for size in LLAMA2:
        config = llama2_config(size)
        nola = count_nola(config, args.num_basis)
        lora = [count_lora(config, r) for r in LORA_RANKS]
        cells = " | ".join(f"{n:,}" for n in lora)
        print(f"| LLaMA-2 {size} | {config.num_hidden_layers} | {nola:,} | {cells} | {lora[0] / nola:.1f}x |")
    print()
    print_vit_table()


if __name__ == "__main__":
    main()
