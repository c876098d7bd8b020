"""GPT-2 with adapter slots (NOLA on q/v and optionally the MLP, or LoRA on q/v) and a KV cache.

Parameter names follow microsoft/LoRA's fork (``transformer.h.0.attn.c_attn.weight``, ...), which
are also ``transformers``' names, so published and fork checkpoints load unchanged.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nola.layers import LoRAConfig, NOLAConfig, NOLAGroup, apply_delta, lora_attention

CARDS = {
    "gpt2.sm": {"n_embd": 768, "n_layer": 12, "n_head": 12},
    "gpt2.md": {"n_embd": 1024, "n_layer": 24, "n_head": 16},
    "gpt2.lg": {"n_embd": 1280, "n_layer": 36, "n_head": 20},
}

Past = list[tuple[torch.Tensor, torch.Tensor]]
Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class GPT2Config:
    """GPT-2 hyper-parameters, named as in ``transformers``' GPT2Config."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5
    card: str = "gpt2.sm"

    @classmethod
    def from_card(cls, card: str) -> "GPT2Config":
        """``gpt2.sm`` / ``gpt2.md`` / ``gpt2.lg``, or a JSON file with GPT2Config keys."""
        if card in CARDS:
            return cls(card=card, **CARDS[card])
        path = Path(card)
        if not path.is_file():
            raise ValueError(f"--model_card {card!r}: not one of {sorted(CARDS)} and no such JSON file")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"--model_card {card}: not valid JSON ({exc})") from exc
        known = {f.name for f in fields(cls)} - {"card"}
        cfg = cls(card=str(path), **{k: v for k, v in raw.items() if k in known})
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"--model_card {card}: n_embd={cfg.n_embd} is not divisible by n_head={cfg.n_head}")
        return cfg

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Conv1D(nn.Module):
    """``x @ weight + bias`` with ``weight`` stored as (in, out), as GPT-2 checkpoints hold it."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out).normal_(std=0.02))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


class Attention(nn.Module):
    def __init__(self, cfg: GPT2Config, lora: LoRAConfig | None) -> None:
        super().__init__()
        self.n_head, self.n_embd = cfg.n_head, cfg.n_embd
        self.c_attn = lora_attention(cfg.n_embd, lora) if lora else Conv1D(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = Conv1D(cfg.n_embd, cfg.n_embd)

    def forward(self, x, factors: Factors | None, past, mask):
        q, k, v = self.c_attn(x).split(self.n_embd, dim=-1)
        if factors:
            if "attn_q" in factors:
                q = q + apply_delta(x, factors["attn_q"])
            if "attn_v" in factors:
                v = v + apply_delta(x, factors["attn_v"])
        b, t, _ = x.shape
        q, k, v = (z.view(b, t, self.n_head, -1).transpose(1, 2) for z in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        causal = mask is None and t > 1
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, self.n_embd)), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.c_fc = Conv1D(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = Conv1D(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x, factors: Factors | None):
        h = self.c_fc(x)
        if factors and "mlp_fc" in factors:
            h = h + apply_delta(x, factors["mlp_fc"])
        h = F.gelu(h, approximate="tanh")
        out = self.c_proj(h)
        if factors and "mlp_proj" in factors:
            out = out + apply_delta(h, factors["mlp_proj"])
        return out


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config, lora: LoRAConfig | None) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = Attention(cfg, lora)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = MLP(cfg)

    def forward(self, x, factors, past, mask):
        a, present = self.attn(self.ln_1(x), factors, past, mask)
        x = x + a
        return x + self.mlp(self.ln_2(x), factors), present


class GPT2Model(nn.Module):
    def __init__(self, cfg: GPT2Config, lora: LoRAConfig | None) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.h = nn.ModuleList(Block(cfg, lora) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.wpe.weight, std=0.01)


def nola_roles(cfg: GPT2Config, nola: NOLAConfig) -> dict[str, tuple[int, int]]:
    """Adapted projections and their (d_in, d_out): q and v, and with ``mlp`` the two MLP layers."""
    d = cfg.n_embd
    roles = {}
    if nola.qv:
        roles.update(attn_q=(d, d), attn_v=(d, d))
    if nola.mlp:
        roles.update(mlp_fc=(d, 4 * d), mlp_proj=(4 * d, d))
    return roles


def attention_mask(past_len: int, new_len: int, key_mask: torch.Tensor | None, device) -> torch.Tensor | None:
    """Boolean (B, 1, T, S) mask: causal over a cache of ``past_len`` plus optional key padding.

    Every query may always see itself, so no row is fully masked (padding rows stay finite).
    """
    if key_mask is None and (past_len == 0 or new_len == 1):
        return None
    total = past_len + new_len
    causal = torch.ones(new_len, total, dtype=torch.bool, device=device).tril(diagonal=past_len)
    diag = torch.zeros_like(causal)
    diag[torch.arange(new_len), torch.arange(past_len, total)] = True
    if key_mask is None:
        return causal[None, None]
    return (causal & key_mask[:, None, None, :].bool()) | diag


class GPT2LMModel(nn.Module):
    """GPT-2 language model with NOLA or LoRA adapters and an incremental-decoding cache."""

    def __init__(self, cfg: GPT2Config, nola: NOLAConfig | None = None, lora: LoRAConfig | None = None) -> None:
        super().__init__()
        if nola is not None and lora is not None:
            raise ValueError("NOLA and LoRA adapters cannot be combined")
        self.config, self.nola_config, self.lora_config = cfg, nola, lora
        self.transformer = GPT2Model(cfg, lora)
        self.nola = None
        if nola is not None:
            self.nola = nn.ModuleDict({
                role: NOLAGroup(role, cfg.n_layer, d_in, d_out, nola)
                for role, (d_in, d_out) in nola_roles(cfg, nola).items()
            })
        self.merged = False
        self.freeze_base()

    def freeze_base(self) -> None:
        """Only adapter tensors train (NOLA α/β, LoRA A/B); without adapters everything trains."""
        has_adapter = self.nola is not None or self.lora_config is not None
        for name, param in self.named_parameters():
            adapter_param = name.startswith("nola.") or "lora_" in name
            param.requires_grad_(adapter_param or not has_adapter)

    def adapter_factors(self) -> list[Factors] | None:
        """Per layer, the NOLA factors of every role (mixed once for all layers), or None."""
        if self.nola is None or self.merged:
            return None
        mixed = {role: group.factors() for role, group in self.nola.items()}
        return [{role: (a[i], b[i]) for role, (a, b) in mixed.items()} for i in range(self.config.n_layer)]

    def forward(
        self,
        input_ids: torch.Tensor,
        past: Past | None = None,
        position_ids: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, Past]:
        """Logits (B, T, V) and the new cache. ``key_mask`` (B, past+T) marks real tokens.
        ``last_only``: logits of the last position only, (B, 1, V) (decoding needs no others)."""
        x, presents = self.hidden(input_ids, past, position_ids, key_mask, last_only)
        return F.linear(x, self.transformer.wte.weight), presents

    def hidden(
        self,
        input_ids: torch.Tensor,
        past: Past | None = None,
        position_ids: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, Past]:
        """What :meth:`forward` feeds the LM head: the final layer-normed states (B, T, D), and the
        cache. Training applies the head only where the loss is (:mod:`nola.objective`)."""
        t = input_ids.shape[1]
        past_len = 0 if past is None else past[0][0].shape[2]
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + t, device=input_ids.device).unsqueeze(0)
        tr = self.transformer
        x = tr.wte(input_ids) + tr.wpe(position_ids)
        mask = attention_mask(past_len, t, key_mask, input_ids.device)
        per_layer = self.adapter_factors()
        presents = []
        for i, block in enumerate(tr.h):
            x, present = block(x, per_layer[i] if per_layer else None, None if past is None else past[i], mask)
            presents.append(present)
        if last_only:
            x = x[:, -1:]
        return tr.ln_f(x), presents

    @torch.no_grad()
    def _adapter_deltas(self):
        """(weight, column slice, ΔW) for every adapted projection."""
        d = self.config.n_embd
        if self.nola is not None:
            targets = {
                "attn_q": lambda blk: (blk.attn.c_attn.weight, slice(0, d)),
                "attn_v": lambda blk: (blk.attn.c_attn.weight, slice(2 * d, 3 * d)),
                "mlp_fc": lambda blk: (blk.mlp.c_fc.weight, slice(None)),
                "mlp_proj": lambda blk: (blk.mlp.c_proj.weight, slice(None)),
            }
            for role, group in self.nola.items():
                deltas = group.delta_weight()
                for i, blk in enumerate(self.transformer.h):
                    weight, cols = targets[role](blk)
                    yield weight, cols, deltas[i]
        elif self.lora_config is not None:
            for blk in self.transformer.h:
                layer = blk.attn.c_attn
                yield layer.weight, slice(None), layer.merge_AB() * layer.scaling

    @torch.no_grad()
    def merge_adapters(self) -> None:
        """Fold every adapter delta into its frozen weight, so decoding costs the base model."""
        if self.merged:
            return
        for weight, cols, delta in list(self._adapter_deltas()):
            weight[:, cols] += delta.to(weight.dtype)
        self._set_merged(True)

    @torch.no_grad()
    def unmerge_adapters(self) -> None:
        """Undo :meth:`merge_adapters`."""
        if not self.merged:
            return
        self._set_merged(False)
        for weight, cols, delta in list(self._adapter_deltas()):
            weight[:, cols] -= delta.to(weight.dtype)

    def _set_merged(self, merged: bool) -> None:
        self.merged = merged
        if self.lora_config is not None:
            for blk in self.transformer.h:
                blk.attn.c_attn.merged = merged

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Only the trained adapter tensors (NOLA α/β or LoRA A/B)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("nola.") or "lora_" in k}


def lm_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
            label_smooth: float = 0.0) -> torch.Tensor:
    """Masked token cross-entropy, with label smoothing as microsoft/LoRA's NLG code applies it:
    ``(1-ε)·nll + ε·mean(-log p)``, summed over masked tokens and divided by ``Σmask + 1e-4``."""
    logp = F.log_softmax(logits.float(), dim=-1)
    loss = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    if label_smooth > 0:
        loss = (1.0 - label_smooth) * loss - label_smooth * logp.mean(dim=-1)
    if mask is None:
        mask = torch.ones_like(loss)
    return (loss * mask).sum() / (mask.sum() + 1e-4)


def count_trainable(model: nn.Module) -> int:
    """Number of parameters that receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_count(cfg: GPT2Config, rank: int, roles: dict[str, tuple[int, int]]) -> int:
    """Parameters LoRA would train at ``rank`` on the same projections: L·Σ r·(d_in + d_out)."""
    return cfg.n_layer * sum(rank * (d_in + d_out) for d_in, d_out in roles.values())


def describe_trainable(model: GPT2LMModel) -> str:
    """The start-up line every script prints: trainable count, plus LoRA's at the same rank."""
    n = count_trainable(model)
    cfg = model.config
    if model.nola_config is not None:
        nc = model.nola_config
        roles = nola_roles(cfg, nc)
        return (f"trainable parameters: {n:,} (NOLA r={nc.rank}, k=l={nc.num_basis}, "
                f"{cfg.n_layer} layers x {len(roles)} projections [{', '.join(roles)}]); "
                f"LoRA at r={nc.rank} on the same projections: {lora_count(cfg, nc.rank, roles):,}")
    if model.lora_config is not None:
        return f"trainable parameters: {n:,} (LoRA r={model.lora_config.dim} on q,v x {cfg.n_layer} layers)"
    return f"trainable parameters: {n:,} (no adapter: full model)"
