"""The 4-bit NF4 path on CUDA (bitsandbytes), on a tiny random LLaMA: what the CPU tests cannot run.

Checks, each printing one ``ok:`` line: the base loads as bitsandbytes ``Linear4bit`` projections
(NF4, double quantisation); llama_ft.py trains NOLA (bases on the fly) on it with bf16 and gradient
checkpointing and the loss falls; the adapter saved from the 4-bit base loads onto the bf16 base
(same base identity) and gives logits close to the 4-bit ones; eval/mmlu.py scores with --bits 4.
Exit 0 when all pass, 1 on a failed check, 2 when CUDA or bitsandbytes is missing.

    python scripts/llama/gpu_check_4bit.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import torch


def check(condition: bool, message: str) -> None:
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device visible: the 4-bit check needs a GPU", file=sys.stderr)
        sys.exit(2)
    try:
        import bitsandbytes as bnb
    except ImportError:
        print("error: bitsandbytes is not installed: pip install bitsandbytes", file=sys.stderr)
        sys.exit(2)
    from nola.causal.alpaca import PROMPT_INPUT, PROMPT_NO_INPUT
    from nola.causal.causal_lm import load_causal_lm
    from nola.config import LlamaSource
    from nola.hf_adapter import load_adapter
    from scripts.tiny_llama import save_tiny_llama, words_of
    from src.llama_ft import main as train
    from eval.mmlu import main as mmlu

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nola_4bit_"))
    root.mkdir(parents=True, exist_ok=True)
    colours = ["red", "blue", "green", "black"]
    records = [{"instruction": f"Name the colour number {i}", "input": "of the sky" if i % 2 else "",
                "output": f"The colour is {colours[i % 4]} today"} for i in range(16)]
    (root / "alpaca.json").write_text(json.dumps(records))
    mmlu_dir = root / "mmlu"
    for split in ("dev", "test"):
        (mmlu_dir / split).mkdir(parents=True, exist_ok=True)
        rows = [[f"Question {j} ?", "one", "two", "three", "four", "ABCD"[j % 4]] for j in range(5)]
        with open(mmlu_dir / split / f"anatomy_{split}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    texts = [PROMPT_INPUT, PROMPT_NO_INPUT, "Answer: A B C D", "The following are multiple choice questions "
             "(with answers) about anatomy . Question ? one two three four"] + [" ".join(r.values()) for r in records]
    model_dir = save_tiny_llama(root / "model", words_of(texts), hidden=128, intermediate=256,
                                initializer_range=0.2)

    four = LlamaSource(model_name_or_path=str(model_dir), bits=4, bf16=True)
    model, _ = load_causal_lm(four, torch.device("cuda", 0))
    q_proj = model.model.layers[0].self_attn.q_proj
    check(isinstance(q_proj, bnb.nn.Linear4bit) and q_proj.weight.quant_type == "nf4"
          and q_proj.weight.quant_state.nested, "the base loads as NF4 Linear4bit with double quantisation")
    del model

    out = root / "adapter"
    train(["--model_name_or_path", str(model_dir), "--dataset", str(root / "alpaca.json"), "--bits", "4", "--bf16",
           "--gradient_checkpointing", "--nola_rank", "4", "--nola_num_basis", "64", "--nola_c", "4",
           "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2", "--max_steps", "15",
           "--lr", "0.05", "--logging_steps", "1", "--max_grad_norm", "0", "--output_dir", str(out)])
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    check(losses[-1] < 0.9 * losses[0], f"NOLA on the 4-bit base lowers the loss ({losses[0]:.3f} -> {losses[-1]:.3f})")

    ids = torch.arange(4, 30, device="cuda")[None]
    quantised, _ = load_causal_lm(four, torch.device("cuda", 0))
    load_adapter(quantised, out)
    bf16, _ = load_causal_lm(LlamaSource(model_name_or_path=str(model_dir), bits=16, bf16=True),
                             torch.device("cuda", 0))
    load_adapter(bf16, out)  # same base identity: quantization_config is not part of it
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = quantised(input_ids=ids).logits.float(), bf16(input_ids=ids).logits.float()
    gap = ((a - b).norm() / b.norm()).item()
    check(gap < 0.5, f"the adapter loads onto the bf16 base; 4-bit vs bf16 logits differ by {gap:.3f} (relative)")

    result = root / "mmlu.json"
    mmlu(["--model_name_or_path", str(model_dir), "--bits", "4", "--bf16", "--adapter", str(out),
          "--data_dir", str(mmlu_dir), "--output", str(result)])
    score = json.loads(result.read_text())
    check(score["subjects"]["anatomy"]["total"] == 5, f"eval/mmlu.py --bits 4 scores (accuracy {score['average']:.2f})")
    print(f"all 4-bit checks passed ({root})")


if __name__ == "__main__":
    main()
