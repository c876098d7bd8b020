"""Decoding throughput (generated tokens/s) of gpt2_beam.py's search, beam 10, lp 0.8, no-repeat 4.

Rows, all on the same random GPT-2-shaped weights and the first E2E test contexts, in one run:
our search with a NOLA adapter merged into the weights, the same without any adapter (ratio ≈ 1),
with the adapter left unmerged (what merging saves), and ``transformers``' ``generate`` with
``num_beams=10, length_penalty=0.8, no_repeat_ngram_size=4`` on the merged weights. Every system
generates exactly ``eval_len`` tokens per context (EOS banned until then: ``min_length`` /
``min_new_tokens``), so the work is equal and tokens/s = contexts · eval_len / seconds.

    python benchmarks/decode.py [--quick] [--device auto|cpu|cuda]
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from common import interleaved_seconds, print_table, save_results, tiny_gpt2

from nola.decoding.beam import decode_contexts
from nola.gpt2.build import build_from_flags
from nola.config import BeamSettings
from nola.gpt2.export import export_hf


def e2e_contexts(count: int, max_len: int) -> list[list[int]]:
    """The first ``count`` distinct E2E test contexts, encoded (from $NOLA_DATA_MIRROR)."""
    from nola.train.formats import read_e2e
    from nola.gpt2.tokenizer import EOS_ID, load_tokenizer

    mirror = Path(os.environ.get("NOLA_DATA_MIRROR", Path(__file__).resolve().parents[2] / "shared"))
    seen = dict.fromkeys(r["context"] for r in read_e2e(mirror / "data" / "e2e" / "test.txt"))
    tok = load_tokenizer(mirror / "vocab")
    return [tok.encode(c)[-max_len + 1:] + [EOS_ID] for c in list(seen)[:count]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 contexts, 24 tokens, a 4-layer model")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    shape = dict(n_embd=256, n_layer=4, n_head=4) if args.quick else dict(n_embd=768, n_layer=12, n_head=12)
    contexts, eval_len, batch = (8, 24, 8) if args.quick else (32, 64, 8)
    queries = e2e_contexts(contexts, 128)
    settings = BeamSettings(beam=10, eval_len=eval_len, length_penalty=0.8, no_repeat_ngram_size=4,
                            min_length=eval_len, eos_ids=(50256, 628))
    tokens = len(queries) * eval_len

    with tempfile.TemporaryDirectory() as tmp:
        base = tiny_gpt2(Path(tmp) / "base", n_positions=512, **shape)
        models = {}
        for name, flags in (("ours, no adapter", []),
                            ("ours, NOLA merged", ["--nola_rank", "8", "--nola_qv", "--nola_num_basis", "1000"]),
                            ("ours, NOLA unmerged", ["--nola_rank", "8", "--nola_qv", "--nola_num_basis", "1000"])):
            built = build_from_flags(["--model_card", str(base / "card.json"),
                                      "--init_checkpoint", str(base / "model.safetensors"), *flags], device)
            model = built.model.eval()
            if model.nola is not None:
                torch.manual_seed(0)
                with torch.no_grad():
                    for g in model.nola.values():
                        g.alpha.normal_(0, 0.05)
                        g.beta.normal_(0, 0.05)
                if "unmerged" not in name:
                    model.merge_adapters()
            models[name] = model
        from transformers import GPT2LMHeadModel

        hf = GPT2LMHeadModel.from_pretrained(export_hf(models["ours, NOLA merged"], Path(tmp) / "hf")).to(device).eval()

    def hf_generate() -> None:
        for start in range(0, len(queries), batch):
            chunk = queries[start:start + batch]
            width = max(map(len, chunk))
            ids = torch.tensor([[0] * (width - len(q)) + q for q in chunk], device=device)
            mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in chunk], device=device)
            with torch.no_grad():
                hf.generate(input_ids=ids, attention_mask=mask, num_beams=10, length_penalty=0.8,
                            no_repeat_ngram_size=4, max_new_tokens=eval_len, min_new_tokens=eval_len,
                            eos_token_id=[50256, 628], pad_token_id=0, do_sample=False)

    systems = {name: (lambda m=model: decode_contexts(m, queries, settings, batch)) for name, model in models.items()}
    systems["transformers generate (merged weights)"] = hf_generate
    times = interleaved_seconds(systems, rounds=5 if args.quick else 3, device=device)
    rows = [{"system": name, "seconds": sec, "tokens_per_s": tokens / sec} for name, sec in times.items()]
    ref = rows[0]["tokens_per_s"]
    hf_tps = rows[-1]["tokens_per_s"]
    print_table(f"Beam 10 decoding, {len(queries)} E2E contexts x {eval_len} tokens, batch {batch}, "
                f"{shape['n_layer']} layers x {shape['n_embd']} ({device.type})",
                ["system", "s", "tokens/s", "x no adapter", "x transformers"],
                [[r["system"], r["seconds"], r["tokens_per_s"], r["tokens_per_s"] / ref, r["tokens_per_s"] / hf_tps]
                 for r in rows])
    path = save_results("decode" + ("_quick" if args.quick else "") + ("_cuda" if device.type == "cuda" else ""),
                        {"contexts": len(queries), "eval_len": eval_len, "batch": batch, "shape": shape, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
