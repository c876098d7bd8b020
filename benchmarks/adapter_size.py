"""Bytes on disk of the adapter checkpoints gpt2_ft.py writes, for GPT-2 S/M/L on q and v.

Each file is written by the real ``save_adapter`` (model built on the meta device, adapter tensors
as zeros: size does not depend on values), so container overhead and b-bit packing are included.

    python benchmarks/adapter_size.py
"""
from __future__ import annotations

from common import print_table, save_results

from nola.layers import LoRAConfig, NOLAConfig
from nola.model import GPT2Config
from nola.sizes import PAPER_BASE, _CARD_SIZE, adapter_file_bytes

SETTINGS = [
    ("NOLA r=8 k=l=1000 fp32", NOLAConfig(rank=8, num_basis=1000)),
    ("NOLA r=8 k=l=1000 4-bit", NOLAConfig(rank=8, num_basis=1000, qbits=4)),
    ("NOLA r=8 k=l=1000 3-bit", NOLAConfig(rank=8, num_basis=1000, qbits=3)),
    ("NOLA r=8 k=l=500 fp32", NOLAConfig(rank=8, num_basis=500)),
    ("NOLA r=8 k=l=500 3-bit", NOLAConfig(rank=8, num_basis=500, qbits=3)),
    ("NOLA r=8 k=l=375 3-bit", NOLAConfig(rank=8, num_basis=375, qbits=3)),
    ("LoRA r=4 fp32", LoRAConfig(dim=4, alpha=32.0)),
    ("LoRA r=1 fp32", LoRAConfig(dim=1, alpha=32.0)),
]


def main() -> None:
    rows = []
    for card, size_name in _CARD_SIZE.items():
        cfg = GPT2Config.from_card(card)
        for name, adapter in SETTINGS:
            size, params = adapter_file_bytes(cfg, adapter, PAPER_BASE.format(size=size_name))
            rows.append({"card": card, "adapter": name, "params": params, "bytes": size})
    for card in _CARD_SIZE:
        lora4 = next(r["bytes"] for r in rows if r["card"] == card and r["adapter"] == "LoRA r=4 fp32")
        print_table(f"Adapter file size, {card}, q and v", ["adapter", "trainable params", "bytes", "KB", "/ LoRA r=4"],
                    [[r["adapter"], r["params"], r["bytes"], r["bytes"] / 1024, r["bytes"] / lora4]
                     for r in rows if r["card"] == card])
    print(f"wrote {save_results('adapter_size', {'rows': rows})}")


if __name__ == "__main__":
    main()
