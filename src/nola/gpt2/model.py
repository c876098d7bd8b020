"""GPT-2 with adapter slots (NOLA on q/v and optionally the MLP, or LoRA on q/v) and a KV cache.

Parameter names follow microsoft/LoRA's fork (``transformer.h.0.attn.c_attn.weight``, ...), which
are also ``transformers``' names, so published and fork checkpoints load unchanged.
"""
from __future__ import annotations

import copy

import loralib
import torch
import torch.nn.functional as F
from torch import nn

from nola.gpt2.card import GPT2Config  # noqa: F401  (re-exported: the model's hyper-parameters)
from nola.config import LoRAConfig, NOLAConfig
from nola.adapters import GPT2_ROLES, AdapterSpec, adapter_state, count_trainable, freeze_base, gpt2_targets, inject, is_merged, set_merged
from nola.train.distributed import rank_share
from nola.gpt2.dropout import PaddedDropout

Past = list[tuple[torch.Tensor, torch.Tensor]]



def lora_attention(n_embd: int, cfg: LoRAConfig) -> loralib.MergedLinear:
    """The fused q/k/v projection with LoRA on q and v, exactly as microsoft/LoRA's GPT-2 builds it;
    its dropout draws the padded batch's masks (:class:`nola.gpt2.dropout.PaddedDropout`)."""
    layer = loralib.MergedLinear(
        n_embd, 3 * n_embd, r=cfg.dim, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        enable_lora=[True, False, True], fan_in_fan_out=True, merge_weights=False,
    )
    if cfg.dropout > 0:
        layer.lora_dropout = PaddedDropout(cfg.dropout)
    return layer


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

    def forward(self, x, past, mask):
        q, k, v = self.c_attn(x).split(self.n_embd, dim=-1)
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

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config, lora: LoRAConfig | None) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = Attention(cfg, lora)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = MLP(cfg)

    def forward(self, x, past, mask):
        a, present = self.attn(self.ln_1(x), past, mask)
        x = x + a
        return x + self.mlp(self.ln_2(x)), present


class GPT2Model(nn.Module):
    def __init__(self, cfg: GPT2Config, lora: LoRAConfig | None) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        block = Block(cfg, lora)  # one block, copied: every layer starts with the same LoRA A, as in microsoft/LoRA
        self.h = nn.ModuleList(copy.deepcopy(block) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        redraw_as_original(self)


    def forward(self, input_ids: torch.Tensor, past: Past | None = None, position_ids: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None, last_only: bool = False) -> tuple[torch.Tensor, Past]:
        """Final layer-normed states (B, T, D) and the new cache; see :meth:`GPT2LMModel.forward`."""
        t = input_ids.shape[1]
        past_len = 0 if past is None else past[0][0].shape[2]
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + t, device=input_ids.device).unsqueeze(0)
        x = self.wte(input_ids) + self.wpe(position_ids)
        mask = attention_mask(past_len, t, key_mask, input_ids.device)
        presents = []
        for i, block in enumerate(self.h):
            x, present = block(x, None if past is None else past[i], mask)
            presents.append(present)
        if last_only:
            x = x[:, -1:]
        return self.ln_f(x), presents


@torch.no_grad()
def redraw_as_original(tr: GPT2Model) -> None:
    """The global-RNG draws microsoft/LoRA's ``GPT2LMModel`` makes after building its layers, in its
    order and amounts: its ``lm_head`` is tied (:func:`redraw_tied_head`), then
    ``apply(_init_weights)`` draws N(0, 0.02) for ``wte``, ``wpe``, every ``c_attn`` that is an
    ``nn.Linear`` (loralib's, as stored: transposed; bias zeroed) and, through the tied head,
    ``wte`` once more. Base weights are overwritten by the checkpoint; what this keeps is the RNG
    stream, hence LoRA's dropout masks."""
    redraw_tied_head(tr)
    tr.wte.weight.normal_(mean=0.0, std=0.02)
    tr.wpe.weight.normal_(mean=0.0, std=0.02)
    for block in tr.h:
        if isinstance(block.attn.c_attn, nn.Linear):
            block.attn.c_attn.weight.normal_(mean=0.0, std=0.02)
            block.attn.c_attn.bias.zero_()
    tr.wte.weight.normal_(mean=0.0, std=0.02)


def redraw_tied_head(tr: GPT2Model) -> None:
    """The RNG draw of microsoft/LoRA's ``GPT2LMHead.set_embeddings_weights``: each time it ties the
    head to ``wte`` (at construction, and again in ``load_weight``) it creates an
    ``nn.Linear(n_embd, vocab)`` (kaiming-uniform) whose weight it then replaces. Our head is
    ``wte`` itself, so only the draw is made."""
    weight = tr.wte.weight
    nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device)


def nola_roles(cfg: GPT2Config, nola: NOLAConfig) -> dict[str, tuple[int, int]]:
    """Adapted projections and their (d_in, d_out): q and v, and with ``mlp`` the two MLP layers."""
    widths = {"attn.c_attn": (cfg.n_embd, 3 * cfg.n_embd), "mlp.c_fc": (cfg.n_embd, 4 * cfg.n_embd),
              "mlp.c_proj": (4 * cfg.n_embd, cfg.n_embd)}
    roles = {}
    for role in gpt2_targets(nola):
        suffix, _, parts = GPT2_ROLES[role]
        d_in, d_out = widths[suffix]
        roles[role] = (d_in, d_out // parts)
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
    """GPT-2 language model with NOLA or LoRA adapters and an incremental-decoding cache.

    NOLA is put on the projections by :func:`nola.adapters.inject` (as on any ``transformers``
    model); LoRA is loralib's ``MergedLinear`` inside the attention, as microsoft/LoRA builds it."""

    def __init__(self, cfg: GPT2Config, nola: NOLAConfig | None = None, lora: LoRAConfig | None = None) -> None:
        super().__init__()
        if nola is not None and lora is not None:
            raise ValueError("NOLA and LoRA adapters cannot be combined")
        self.config, self.nola_config, self.lora_config = cfg, nola, lora
        self.transformer = GPT2Model(cfg, lora)
        self.nola = None
        if nola is not None:
            if not gpt2_targets(nola):
                raise ValueError("--nola_rank needs a target: add --nola_qv and/or --nola_mlp")
            inject(self, nola, gpt2_targets(nola))
        if lora is not None:  # built into the attention (lora_attention); recorded as inject_lora records it
            self.adapter_spec = AdapterSpec(lora, ("attn_q", "attn_v"))
        freeze_base(self)

    @property
    def adapter(self) -> NOLAConfig | LoRAConfig | None:
        return self.nola_config or self.lora_config

    @property
    def merged(self) -> bool:
        return is_merged(self)

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
        x, presents = self.transformer(input_ids, past, position_ids, key_mask, last_only)
        return F.linear(x, self.transformer.wte.weight), presents

    def merge_adapters(self) -> None:
        """Fold every adapter delta into its frozen weight, so decoding costs the base model."""
        set_merged(self, True)

    def unmerge_adapters(self) -> None:
        """Undo :meth:`merge_adapters`."""
        set_merged(self, False)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Only the trained adapter tensors (NOLA α/β or LoRA A/B)."""
        return adapter_state(self)

    def beam_steps(self):
        """This model's forward and KV cache as the shared beam rule drives them (``nola.decoding.beam``
        asks the model, so that layer imports no GPT-2 code)."""
        from nola.gpt2.beam import ForkSteps  # nola.gpt2.beam imports this module

        return ForkSteps(self)


def lm_loss_sum(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                label_smooth: float = 0.0) -> torch.Tensor:
    """Masked token cross-entropy summed over the masked tokens, with label smoothing as microsoft/LoRA's
    NLG code applies it: ``(1-ε)·nll + ε·mean(-log p)``."""
    logp = F.log_softmax(logits.float(), dim=-1)
    loss = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    if label_smooth > 0:
        loss = (1.0 - label_smooth) * loss - label_smooth * logp.mean(dim=-1)
    return (loss * mask).sum()


def lm_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
            label_smooth: float = 0.0, tokens: torch.Tensor | None = None, world_size: int = 1) -> torch.Tensor:
    """:func:`lm_loss_sum` divided by ``Σmask + 1e-4``, microsoft/LoRA's training loss.

    Under DDP, ``tokens`` is ``Σmask`` summed over the ranks of the micro-step and the result this
    rank's :func:`~nola.train.distributed.rank_share` of the all-rank batch's loss (the defaults: one
    process); the training loop divides :func:`lm_loss_sum` so (:mod:`nola.gpt2.train`)."""
    if mask is None:
        mask = torch.ones(target.shape, dtype=torch.float32, device=target.device)
    total = mask.sum() if tokens is None else tokens
    return rank_share(lm_loss_sum(logits, target, mask, label_smooth), total + 1e-4, world_size)


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
