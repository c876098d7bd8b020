"""Bytes on disk of the adapter folders gpt2_ft.py writes (``model.<step>/``, both files), for GPT-2 S/M/L
on q and v.

Each folder is written by the real save (``nola.gpt2.checkpoint.save_checkpoint``; model built on the meta
device, adapter tensors as zeros: size does not depend on values), so header overhead and b-bit packing
are included.

    python benchmarks/adapter_size.py
"""
from __future__ import annotations

from common import print_table, save_results

from nola.gpt2.sizes import CARDS, paper_sizes


def main() -> None:
    rows = [{"card": card, "adapter": name, "params": params, "bytes": size}
            for card in CARDS for name, params, size in paper_sizes(card)]
    for card in CARDS:
        lora4 = next(r["bytes"] for r in rows if r["card"] == card and r["adapter"] == "LoRA r=4 fp32")
        print_table(f"Adapter file size, {card}, q and v", ["adapter", "trainable params", "bytes", "KB", "/ LoRA r=4"],
                    [[r["adapter"], r["params"], r["bytes"], r["bytes"] / 1024, r["bytes"] / lora4]
                     for r in rows if r["card"] == card])
    print(f"wrote {save_results('adapter_size', {'rows': rows})}")


if __name__ == "__main__":
    main()
