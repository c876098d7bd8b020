"""Seconds per optimiser step (forward + backward + AdamW) for each adapter, as ratios to LoRA r=4.

Three views, all measured in one run:
1. one 1024x1024 projection (frozen weight + adapter), forward + backward;
2. the mixing of one role across 24 layers: one (L x k)(k x r·d) product vs a product per layer;
3. the whole GPT-2-shaped model with random weights (each configuration in its own process, so its
   peak memory is its own).
The "official-style" rows regenerate the basis with the global torch RNG on every call and again
in backward (recomputation), the way the first NOLA release does; it is written here plainly.

    python benchmarks/train_step.py [--quick] [--device auto|cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import torch
import torch.utils.checkpoint as ckpt
from common import ROOT, interleaved_seconds, median_seconds, peak_memory_bytes, print_table, save_results

from nola.config import LoRAConfig, NOLAConfig
from nola.adapters import gpt2_targets, inject
from nola.layers import NOLAGroup
from nola.gpt2.model import GPT2Config, GPT2LMModel, lm_loss

NOLA_VARIANTS = [
    ("NOLA k=256 materialised fp32", dict(num_basis=256, mode="materialised")),
    ("NOLA k=256 onthefly", dict(num_basis=256, mode="onthefly")),
    ("NOLA k=1024 materialised fp32", dict(num_basis=1024, mode="materialised")),
    ("NOLA k=1024 materialised bf16", dict(num_basis=1024, mode="materialised", basis_dtype="bfloat16")),
    ("NOLA k=1024 onthefly", dict(num_basis=1024, mode="onthefly")),
    ("qNOLA 3-bit k=1024 materialised", dict(num_basis=1024, mode="materialised", qbits=3)),
]


class OfficialStyleGroup(NOLAGroup):
    """Regenerates each basis from the global RNG in every forward, and again in backward."""

    def _mix(self, coeff: torch.Tensor, factor: str) -> torch.Tensor:
        seeds, k, n, bound = self._factor_meta(factor)

        def regenerate_and_mix(c: torch.Tensor) -> torch.Tensor:
            rows = []
            for layer in range(c.shape[0]):  # the original builds each layer's factor on its own
                torch.manual_seed(seeds[0])
                basis = torch.empty(k, n, device=c.device).uniform_(-bound, bound)
                rows.append(c[layer] @ basis)
            return torch.stack(rows)

        return ckpt.checkpoint(regenerate_and_mix, coeff, use_reentrant=False)


def build(variant: str, cfg: GPT2Config, device: torch.device) -> GPT2LMModel:
    """A model for one benchmark row; ``none`` trains only a scalar gain on the embeddings."""
    if variant == "none":
        model = GPT2LMModel(cfg)
        for p in model.parameters():
            p.requires_grad_(False)
        model.gain = torch.nn.Parameter(torch.ones(()))
        model.transformer.wte.register_forward_hook(lambda mod, inp, out: out * model.gain)
        return model.to(device)
    if variant == "LoRA r=4":
        return GPT2LMModel(cfg, lora=LoRAConfig(dim=4, alpha=32)).to(device)
    if variant == "official-style k=1024":
        nola = NOLAConfig(rank=8, num_basis=1024, qv=True, mode="onthefly")
        model = GPT2LMModel(cfg)
        inject(model, nola, gpt2_targets(nola), group_cls=OfficialStyleGroup)
        model.nola_config = nola
        return model.to(device)
    settings = dict(NOLA_VARIANTS)[variant]
    return GPT2LMModel(cfg, nola=NOLAConfig(rank=8, qv=True, **settings)).to(device)


def time_whole_model(spec: dict) -> dict:
    """Run in a child process: median step time and peak memory of one configuration."""
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    cfg = GPT2Config(**spec["config"])
    model = build(spec["variant"], cfg, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    ids = torch.randint(0, cfg.vocab_size, (spec["batch"], spec["seq"]), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits, _ = model(ids)
        lm_loss(logits, ids.roll(-1, dims=1)).backward()
        opt.step()

    seconds = median_seconds(step, spec["repeats"], warmup=1, device=device)
    return {"seconds": seconds, "peak_bytes": peak_memory_bytes(device),
            "trainable": sum(p.numel() for p in params)}


def projection_rows(device: torch.device, seq: int, repeats: int) -> list[dict]:
    """View 1 and 2: one projection, and the 24-layer mixing of one role."""
    d, batch = 1024, 8
    torch.manual_seed(0)
    x = torch.randn(batch, seq, d, device=device)
    weight = torch.randn(d, d, device=device) / math.sqrt(d)
    rows = []
    lora_a = torch.nn.Parameter(torch.randn(4, d, device=device) / math.sqrt(d))
    lora_b = torch.nn.Parameter(torch.zeros(d, 4, device=device))

    def lora() -> None:
        y = x @ weight + (x @ lora_a.t()) @ lora_b.t() * 8.0
        y.square().mean().backward()

    projection = {"LoRA r=4": lora}
    for name, settings in NOLA_VARIANTS + [("official-style k=1024", dict(num_basis=1024, mode="onthefly"))]:
        cls = OfficialStyleGroup if name.startswith("official") else NOLAGroup
        group = cls("attn_q", 1, d, d, NOLAConfig(rank=8, qv=True, **settings)).to(device)

        def nola(group=group) -> None:
            group.forget()
            y = x @ weight + group.layer_delta(x, 0)
            y.square().mean().backward()

        projection[name] = nola
    for name, sec in interleaved_seconds(projection, repeats, device).items():
        rows.append({"name": name, "view": "projection", "seconds": sec})

    layers = 24
    group = NOLAGroup("attn_q", layers, d, d, NOLAConfig(rank=8, num_basis=1000, qv=True)).to(device)
    grad = torch.randn(layers, d * 8, device=device)

    def grouped() -> None:
        (group.alpha @ group.basis_a * grad).sum().backward()

    def per_layer() -> None:
        sum((group.alpha[i] @ group.basis_a * grad[i]).sum() for i in range(layers)).backward()

    mixing = {"mix 24 layers, one product": grouped, "mix 24 layers, layer by layer": per_layer}
    for name, sec in interleaved_seconds(mixing, repeats, device).items():
        rows.append({"name": name, "view": "mixing", "seconds": sec})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="GPT-2 M shape with 4 layers, sequence 64, 2 timed steps")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--cards", default=None,
                        help="model shapes for the whole-model view (default gpt2.sm,gpt2.md; --quick: gpt2.md)")
    parser.add_argument("--variants", default=None, help="comma-separated subset of the whole-model rows")
    parser.add_argument("--skip_projection", action="store_true", help="only the whole-model view")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(time_whole_model(json.loads(args.one))))
        return
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    on_gpu = device.type == "cuda"
    seq = 64 if args.quick else (512 if on_gpu else 128)
    batch = 8
    repeats = 2 if args.quick else 5

    proj = [] if args.skip_projection else projection_rows(device, seq, repeats)
    if proj:
        lora_proj = proj[0]["seconds"]
        print_table(f"One 1024x1024 projection, batch {batch} x seq {seq}, forward + backward ({device.type})",
                    ["adapter", "ms", "x LoRA r=4"],
                    [[r["name"], r["seconds"] * 1e3, r["seconds"] / lora_proj] for r in proj if r["view"] == "projection"])
        print_table("Mixing one role for 24 layers (k=1000, r=8, d=1024), forward + backward",
                    ["method", "ms"], [[r["name"], r["seconds"] * 1e3] for r in proj if r["view"] == "mixing"])

    whole = []
    variants = ["none", "LoRA r=4"] + [n for n, _ in NOLA_VARIANTS] + ["official-style k=1024"]
    if args.variants:
        variants = [v.strip() for v in args.variants.split(",")]
    cards = (args.cards or ("gpt2.md" if args.quick else "gpt2.sm,gpt2.md")).split(",")
    for card in cards:
        cfg = GPT2Config.from_card(card).to_dict()
        if args.quick:
            cfg["n_layer"] = 4
        for variant in variants:
            spec = {"variant": variant, "config": cfg, "device": str(device), "batch": batch, "seq": seq,
                    "repeats": repeats}
            out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True,
                                 text=True, cwd=ROOT)
            if out.returncode:
                raise SystemExit(f"{card} / {variant} failed:\n{out.stderr[-2000:]}")
            row = {"card": card, "layers": cfg["n_layer"], "variant": variant, **json.loads(out.stdout.strip().splitlines()[-1])}
            whole.append(row)
            print(f"  {card} x{cfg['n_layer']} layers  {variant:34s} {row['seconds']:.3f} s", flush=True)
    for card in cards:
        rows = [r for r in whole if r["card"] == card]
        lora = next(r["seconds"] for r in rows if r["variant"] == "LoRA r=4")
        print_table(f"Whole model {card} ({rows[0]['layers']} layers), batch {batch} x seq {seq}, one step ({device.type})",
                    ["adapter", "trainable", "s/step", "x LoRA r=4", "peak MiB"],
                    [[r["variant"], r["trainable"], r["seconds"], r["seconds"] / lora, r["peak_bytes"] / 2**20] for r in rows])
    subset = "" if args.variants is None and not args.skip_projection else "_subset"
    path = save_results("train_step" + ("_quick" if args.quick else "") + subset + ("_cuda" if on_gpu else ""),
                        {"batch": batch, "seq": seq, "projection": proj, "whole_model": whole})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
