"""Bytes held for NOLA bases per execution mode, measured on the built model and by formula.

Measured = the bytes of the basis tensors the model actually keeps (built on the meta device, so
the 3 GB naive case needs no memory); formula = k·r·(d_in + d_out)·bytes per role (× L when each
layer has its own basis). On-the-fly mode keeps nothing; its transient working set is one chunk.

    python benchmarks/basis_memory.py
"""
from __future__ import annotations

import argparse

import torch
from common import print_table, save_results

from nola.config import NOLAConfig
from nola.gpt2.model import GPT2Config, GPT2LMModel, nola_roles

MODES = [
    ("per-layer bases, materialised fp32 (naive)", dict(seed_per_layer=True, mode="materialised")),
    ("shared bases, materialised fp32", dict(mode="materialised")),
    ("shared bases, materialised bf16", dict(mode="materialised", basis_dtype="bfloat16")),
    ("on the fly (chunked regeneration)", dict(mode="onthefly")),
]


def held_bytes(model: GPT2LMModel) -> int:
    return sum(b.numel() * b.element_size() for g in model.nola.values() for b in (g.basis_a, g.basis_b) if b is not None)


def formula_bytes(cfg: GPT2Config, nola: NOLAConfig) -> int:
    if nola.mode == "onthefly":
        return 0
    width = 2 if nola.basis_dtype == "bfloat16" else 4
    copies = cfg.n_layer if nola.seed_per_layer else 1
    return sum(nola.num_basis * nola.rank * (d_in + d_out) * width * copies
               for d_in, d_out in nola_roles(cfg, nola).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_basis", type=int, default=1024)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    rows = []
    for card in ("gpt2.sm", "gpt2.md", "gpt2.lg"):
        cfg = GPT2Config.from_card(card)
        for label, settings in MODES:
            nola = NOLAConfig(rank=args.rank, num_basis=args.num_basis, qv=True, **settings)
            with torch.device("meta"):
                model = GPT2LMModel(cfg, nola=nola)
            measured, formula = held_bytes(model), formula_bytes(cfg, nola)
            chunk = nola.chunk_rows * args.rank * cfg.n_embd * (4 + 8 + 8) if nola.mode == "onthefly" else 0
            rows.append({"card": card, "mode": label, "measured_bytes": measured, "formula_bytes": formula,
                         "transient_chunk_bytes": chunk})
    print_table(f"Basis memory, q/v, r={args.rank}, k=l={args.num_basis}",
                ["model", "mode", "measured MiB", "formula MiB", "transient MiB"],
                [[r["card"], r["mode"], r["measured_bytes"] / 2**20, r["formula_bytes"] / 2**20,
                  r["transient_chunk_bytes"] / 2**20] for r in rows])
    print(f"wrote {save_results('basis_memory', {'rank': args.rank, 'num_basis': args.num_basis, 'rows': rows})}")


if __name__ == "__main__":
    main()
