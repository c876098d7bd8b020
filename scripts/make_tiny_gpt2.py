"""Write a small random GPT-2 with `transformers` (config.json, card.json, model.safetensors,
pytorch_model.bin in the published layout), for the demo and for trying the scripts without weights."""
from __future__ import annotations

import argparse

from nola.errors import run_cli
from tiny import save_random_gpt2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--n_embd", type=int, default=64)
    parser.add_argument("--n_layer", type=int, default=2)
    parser.add_argument("--n_head", type=int, default=2)
    parser.add_argument("--n_positions", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = save_random_gpt2(args.out, args.n_embd, args.n_layer, args.n_head, args.n_positions, seed=args.seed)
    print(f"random GPT-2 ({args.n_layer} layers x {args.n_embd} dims, 50257 vocab) written to {out}; "
          f"use --model_card {out / 'card.json'} --init_checkpoint {out / 'pytorch_model.bin'}")


if __name__ == "__main__":
    run_cli(main)
