"""Beam-10 data-to-text decoding per E2E meaning representation on a real causal LM: nola.decoding.beam's rule
(what src/llama_beam.py runs) against ``transformers``' ``generate``, and how often they agree.

Both systems decode the same first ``--contexts`` distinct E2E test MRs (nola.causal.d2t prompts, left
padded, ``--batch`` contexts at a time) with the paper's settings: beam 10, length penalty 0.8,
no-repeat 4, at most 64 new tokens, stopping at the tokenizer's EOS; ``generate`` with
``early_stopping=True`` (a batch row stops once it holds 10 finished hypotheses). The systems take
turns within every round; the JSON keeps every round's time.

    python benchmarks/causal_beam.py --model pretrained_checkpoints/smollm2-135m-instruct [--contexts 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import torch
from common import interleaved_times, print_table, save_results

from nola.decoding.beam import decode_contexts
from nola.config import BeamSettings
from nola.causal.d2t import eos_id, prompt_ids


def e2e_mrs(count: int) -> list[str]:
    """The first ``count`` distinct E2E test MRs (from $NOLA_DATA_MIRROR)."""
    from nola.train.formats import read_e2e

    mirror = Path(os.environ.get("NOLA_DATA_MIRROR", Path(__file__).resolve().parents[2] / "shared"))
    return list(dict.fromkeys(r["context"] for r in read_e2e(mirror / "data" / "e2e" / "test.txt")))[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pretrained_checkpoints/smollm2-135m-instruct", help="causal LM folder")
    parser.add_argument("--contexts", type=int, default=20, help="distinct E2E test MRs")
    parser.add_argument("--batch", type=int, default=10, help="contexts decoded together")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (the systems take turns in each)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    mrs = e2e_mrs(args.contexts)
    queries = [prompt_ids(tok, mr) for mr in mrs]
    eos = eos_id(tok)
    settings = BeamSettings(beam=10, eval_len=64, length_penalty=0.8, no_repeat_ngram_size=4, eos_ids=(eos,))
    outputs: dict[str, list[list[int]]] = {}

    def ours(_round: int) -> None:
        outputs["ours"] = decode_contexts(model, queries, settings, args.batch)

    def generate(_round: int) -> None:
        preds = []
        for start in range(0, len(queries), args.batch):
            chunk = queries[start:start + args.batch]
            width = max(map(len, chunk))
            ids = torch.tensor([[eos] * (width - len(q)) + q for q in chunk])
            mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in chunk])
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, num_beams=10, length_penalty=0.8,
                                     no_repeat_ngram_size=4, max_new_tokens=64, early_stopping=True,
                                     eos_token_id=eos, pad_token_id=eos, do_sample=False)
            preds += out[:, width:].tolist()
        outputs["generate"] = preds

    times = interleaved_times({"nola.decoding.beam (llama_beam.py)": ours, "transformers generate": generate},
                              rounds=args.rounds, warmup=False)

    def text(ids: list[int]) -> str:
        return tok.decode([t for t in ids if t != eos], skip_special_tokens=False).strip()

    same = sum(text(a) == text(b) for a, b in zip(outputs["ours"], outputs["generate"]))
    rows = [{"system": name, "seconds_per_mr": [t / len(mrs) for t in ts],
             "median_s_per_mr": statistics.median(ts) / len(mrs)} for name, ts in times.items()]
    base = rows[1]["median_s_per_mr"]
    print_table(f"Beam 10 per E2E MR, {len(mrs)} MRs, batch {args.batch}, {torch.get_num_threads()} threads, "
                f"{Path(args.model).name}", ["system", "s / MR (median)", "min-max", "x generate"],
                [[r["system"], r["median_s_per_mr"], f"{min(r['seconds_per_mr']):.2f}-{max(r['seconds_per_mr']):.2f}",
                  base / r["median_s_per_mr"]] for r in rows])
    print(f"same text as generate: {same} / {len(mrs)} MRs; mean generated tokens (ours) "
          f"{statistics.mean(map(len, outputs['ours'])):.1f}")
    path = save_results("causal_beam", {"model": args.model, "contexts": len(mrs), "batch": args.batch,
                                        "rounds": args.rounds, "rows": rows, "same_text": same,
                                        "examples": [{"mr": mr, "ours": text(a), "generate": text(b)}
                                                     for mr, a, b in list(zip(mrs, outputs["ours"],
                                                                              outputs["generate"]))[:3]]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
