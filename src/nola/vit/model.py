"""The ViT of a run and its adapter: timm's pre-trained ``vit_base/large_patch16_224`` (timm imported
only for them), or ``toy``, a tiny random ViT with timm's module names, shapes and forward pass, for
tests and CPU runs. One code path serves both: the adapters find their projections by timm's names
(:data:`nola.adapters.TIMM_VIT_ROLES`), and the head is re-made by ``reset_classifier`` as the
official code does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nola.adapters import inject
from nola.config import LoRAConfig, NOLAConfig, ViTConfig
from nola.errors import fail
from nola.lora_inject import inject_lora
from nola.vit.transforms import seeded

# --vit -> the name the official vit/train_timm.py passes to timm.create_model (pretrained=True); timm
# resolves it to its default pre-trained tag, which the run records.
TIMM_NAMES = {"base": "vit_base_patch16_224", "large": "vit_large_patch16_224"}
TARGETS = {"lora": ("qkv_q", "qkv_v"), "nola": ("qkv_q", "qkv_v"), "nola_mlp": ("mlp_fc1", "mlp_fc2")}
TOY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 4}
TOY_SEED = 0  # the toy's "pre-trained" weights: the same in every run


class Attention(nn.Module):
    """timm's ``Attention``: fused ``qkv`` (outputs ordered q, k, v; heads within each), ``proj``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6, as timm's ViT)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ToyViT(nn.Module):
    """A ViT with timm ``VisionTransformer``'s parameter names and forward pass (class token,
    learned position embedding, final norm, class-token pooling, ``head``); its state dict loads
    into timm's model of the same sizes."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: int, num_classes: int = 1000) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (img_size // patch_size) ** 2 + 1, embed_dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised head (timm's ``reset_classifier``)."""
        self.head = nn.Linear(self.embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def input_size(arch: str) -> int:
    return TOY["img_size"] if arch == "toy" else 224


def base_model(arch: str) -> tuple[nn.Module, str]:
    """The pre-trained ViT and the name of its weights (timm's ``<arch>.<tag>``)."""
    if arch == "toy":
        with seeded(TOY_SEED):
            return ToyViT(**TOY), "toy (random, seed 0)"
    try:
        import timm
    except (ImportError, OSError) as exc:
        fail(f"--vit {arch} needs timm ({type(exc).__name__}: {exc}); install it with "
             f"`pip install -r requirements-vit.txt` (on a machine with a CUDA torch)")
    name = TIMM_NAMES[arch]
    try:
        model = timm.create_model(name, pretrained=True)
    except (OSError, RuntimeError) as exc:
        fail(f"--vit {arch}: the pre-trained weights of {name} could not be loaded ({type(exc).__name__}); "
             f"connect once to download them into the Hugging Face cache, or set HF_HUB_OFFLINE=1 with "
             f"a filled cache")
    tag = model.pretrained_cfg.get("tag")
    return model, f"{name}.{tag}" if tag else name


def build(cfg: ViTConfig, num_classes: int) -> tuple[nn.Module, str]:
    """The run's model: base, re-made head (initialised from ``--seed``), adapter; only the adapter
    and the head train (everything with ``full``, the head alone with ``linear``)."""
    model, weights = base_model(cfg.vit)
    with seeded(cfg.seed):
        model.reset_classifier(num_classes)
    add_adapter(model, cfg)
    return model, weights


def add_adapter(model: nn.Module, cfg: ViTConfig) -> None:
    """The adapter of ``--train_type`` on a timm-layout ViT, and which tensors train."""
    if cfg.train_type in ("nola", "nola_mlp"):
        inject(model, nola_config(cfg), list(TARGETS[cfg.train_type]))
    elif cfg.train_type == "lora":
        inject_lora(model, lora_config(cfg), list(TARGETS["lora"]))
    for param in model.parameters():
        param.requires_grad_(cfg.train_type == "full" or param.requires_grad and cfg.train_type != "linear")
    model.head.requires_grad_(True)


def nola_config(cfg: ViTConfig) -> NOLAConfig:
    """vit/NOLA.py's NOLA2: ΔW = (1/r)·A·B (c = 1), α = β = 1/k at the start, bases kept in memory."""
    return NOLAConfig(rank=cfg.rank, num_basis=cfg.ka, c=1.0, seed=cfg.nola_seed, mode="materialised")


def lora_config(cfg: ViTConfig) -> LoRAConfig:
    """vit/lora.py's LoRA: x·Aᵀ·Bᵀ added unscaled (loralib's alpha / r = 1), no dropout."""
    return LoRAConfig(dim=cfg.rank, alpha=float(cfg.rank), dropout=0.0)


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a run trains, by state-dict name: α/β (or LoRA's A/B) and the head; all with ``full``."""
    return {name: p.detach().float().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def head_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.head.parameters())

