"""NOLA through PEFT against the native API and PEFT's VeRA: one training step, and ``generate()``.

Two views, each measured in one run with the systems taking turns in every round:
1. one optimiser step (forward + backward + AdamW) on a LLaMA-shaped model: ``nola.inject``,
   ``get_peft_model(NolaConfig)`` and ``get_peft_model(VeraConfig)`` with as many trainable numbers
   (VeRA trains r + d_out per layer, NOLA 2k: r = 2k - d_out; the targets q_proj and o_proj have one
   output width, also in models whose k / v projections are narrower);
2. ``generate()`` of 32 greedy tokens: NOLA through PEFT unmerged (loaded for inference, so its
   factors are mixed once) against the same adapter merged into the weights.
Ratios are of medians over the rounds; the spread is the lowest and highest per-round ratio.

    python benchmarks/peft_step.py [--quick] [--real PATH]   # PATH: e.g. the SmolLM2-135M folder
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import warnings
from pathlib import Path

import torch
from common import interleaved_times, machine, print_table, save_results
from peft import PeftModel, VeraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

import nola
from nola.peft import NolaConfig

TARGETS = ["q_proj", "o_proj"]  # one output width also where k/v are narrower (grouped-query attention)


def tiny_llama(quick: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    width, layers = (128, 4) if quick else (512, 8)
    return LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=width, intermediate_size=width * 8 // 3,
                                        num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=2,
                                        max_position_embeddings=256)).eval()


def step_systems(base: torch.nn.Module, k: int, ids: torch.Tensor) -> tuple[dict, dict]:
    """name -> one training step, and name -> trainable numbers."""
    native = copy.deepcopy(base)
    nola.inject(native, nola.NOLAConfig(rank=8, num_basis=k, target_modules=TARGETS))
    through_peft = get_peft_model(copy.deepcopy(base), NolaConfig(r=8, num_basis=k, target_modules=TARGETS))
    d_out = {m.out_features for n, m in base.named_modules() if n.rpartition(".")[2] in TARGETS}
    if len(d_out) != 1:
        raise SystemExit(f"the targets have output widths {sorted(d_out)}: VeRA's count cannot match NOLA's")
    vera = get_peft_model(copy.deepcopy(base), VeraConfig(r=2 * k - d_out.pop(), target_modules=TARGETS,
                                                          save_projection=False))
    systems, counts = {}, {}
    for name, model in (("native nola.inject", native), ("PEFT NOLA", through_peft), ("PEFT VeRA", vera)):
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)

        def step(r: int, model=model, opt=opt) -> None:
            opt.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()

        systems[name], counts[name] = step, sum(p.numel() for p in params)
    return systems, counts


def generate_systems(base: torch.nn.Module, k: int, prompt: torch.Tensor, tokens: int) -> dict:
    model = get_peft_model(copy.deepcopy(base), NolaConfig(r=8, num_basis=k, target_modules=TARGETS))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".nola_" in name:
                p.normal_(0, 1.0 / k)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        unmerged = PeftModel.from_pretrained(copy.deepcopy(base), tmp).eval()  # inference: α, β frozen
    merged = copy.deepcopy(unmerged).merge_and_unload().eval()

    def run(model):
        def go(r: int) -> None:
            with torch.no_grad():
                model.generate(prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        return go

    return {"PEFT NOLA unmerged": run(unmerged), "PEFT NOLA merged": run(merged)}


def ratios(times: dict[str, list[float]], reference: str) -> list[list[object]]:
    rows = []
    for name, t in times.items():
        per_round = [a / b for a, b in zip(t, times[reference])]
        rows.append([name, statistics.median(t), statistics.median(t) / statistics.median(times[reference]),
                     f"{min(per_round):.2f}-{max(per_round):.2f}"])
    return rows


def measure(label: str, base: torch.nn.Module, k: int, batch: int, seq: int, rounds: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, base.config.vocab_size, (batch, seq), generator=gen)
    systems, counts = step_systems(base, k, ids)
    times = interleaved_times(systems, rounds)
    step_rows = ratios(times, "native nola.inject")
    for row in step_rows:
        row.insert(1, counts[row[0]])
    print_table(f"{label}: one training step (batch {batch} x {seq}, k = {k}), ratio to the native step",
                ["system", "trainable", "median s", "ratio", "per-round ratios"], step_rows)
    prompt = ids[:1, :16]
    gen_times = interleaved_times(generate_systems(base, k, prompt, 32), max(3, rounds // 2))
    gen_rows = ratios(gen_times, "PEFT NOLA merged")
    print_table(f"{label}: generate() of 32 tokens, ratio to the merged model",
                ["system", "median s", "ratio", "per-round ratios"], gen_rows)
    return {"step": {r[0]: {"trainable": r[1], "seconds": r[2], "ratio": r[3], "spread": r[4]} for r in step_rows},
            "generate": {r[0]: {"seconds": r[1], "ratio": r[2], "spread": r[3]} for r in gen_rows},
            "step_times": times, "generate_times": gen_times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 4-layer 128-wide model, k = 256, few rounds")
    parser.add_argument("--real", type=Path, help="also a transformers folder (e.g. SmolLM2-135M-Instruct)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    print(machine())
    results = {"tiny llama": measure("tiny LLaMA", tiny_llama(args.quick), 256 if args.quick else 1024,
                                     4, 64, 6 if args.quick else 10)}
    if args.real:
        base = AutoModelForCausalLM.from_pretrained(args.real).eval()
        results[args.real.name] = measure(args.real.name, base, 1024, 2, 64, 6)
    save_results("peft_step_quick" if args.quick else "peft_step", results)


if __name__ == "__main__":
    main()
