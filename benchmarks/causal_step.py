"""One causal-LM training step on SmolLM2-135M and 8 E2E pairs: the targets-only step against the naive
``labels=`` step, and NOLA against PEFT's LoRA r=1 and VeRA at about the same trainable count.

All systems take turns in every round (a slow spell of the shared machine hits them alike), after
one untimed warm-up step each; medians and the min-max spread over the rounds are reported. A step
is forward, backward, AdamW update and zeroing the gradients, on one batch of the 8 pairs
(``nola.causal.d2t`` prompt and target, right-padded to the longest):

- ``naive labels=``: the model's own loss (LM head at every padded position), read with ``.item()``
  each step, as ``llama_ft.py``'s loop did;
- ``targets only``: :mod:`nola.causal.causal_objective` (the model's own forward with ``logits_to_keep`` at
  the target positions), the loss left on the device.

NOLA (``nola.inject``, r=8, k=l chosen so its count equals LoRA r=1's) runs both steps on one model;
PEFT's LoRA and VeRA models run the targets-only step through their own forward (PEFT passes
``logits_to_keep`` on to the base model).

Useful FLOPs of a step: ``4 x (P_body x R + P_head x N)`` with P_body the decoder's parameters
without the embedding table, P_head = vocabulary x width (SmolLM2's head is its embedding table),
R the real (unpadded) tokens and N the target positions; 4 = forward (2) + the input gradients
(2: the frozen weights need no weight gradients). Attention scores and the adapters are left out.
It is compared with the rate of ``torch.mm`` on 2048 x 2048 float32 matrices, timed as one more
system in the same rounds.

    python benchmarks/causal_step.py [--model DIR] [--rounds 5] [--threads N] [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from common import ROOT, interleaved_times, print_table, save_results

from nola.adapters import inject
from nola.causal.alpaca import collate
from nola.causal.causal_data import encode_d2t
from nola.causal.causal_objective import target_logits, target_nll_sum, with_loss_positions
from nola.config import NOLAConfig
from nola.train.formats import read_e2e

PAIRS = 8
MM = 2048


def e2e_pairs(mirror: Path, tokenizer) -> list[tuple[list[int], list[int]]]:
    """The first reference of each of the first ``PAIRS`` distinct meaning representations of E2E valid."""
    seen: dict[str, dict] = {}
    for record in read_e2e(mirror / "data/e2e/valid.txt"):
        seen.setdefault(record["context"], record)
        if len(seen) == PAIRS:
            break
    return [encode_d2t(r, tokenizer, 1024, 256) for r in seen.values()]


def load(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).train()


def step_fn(model, batch: dict, fast: bool):
    """One training step of ``model`` on ``batch`` with its own AdamW."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(_round: int) -> None:
        if fast:
            loss = target_nll_sum(target_logits(model, batch), batch) / len(batch["targets"])
        else:
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if not fast:
            loss.item()  # the old loop's per-micro-batch host read

    return step


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "pretrained_checkpoints" / "smollm2-135m-instruct"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 keeps a crowded machine from stalling every "
                             "parallel region on a descheduled thread")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or this process's CPU seconds (with --threads 1: the work, without the "
                             "waits for a core on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from peft import LoraConfig, VeraConfig, get_peft_model
    from transformers import AutoTokenizer

    folder = Path(args.model)
    mirror = Path(os.environ.get("NOLA_DATA_MIRROR", ROOT))
    tok = AutoTokenizer.from_pretrained(folder)
    batch = with_loss_positions(collate(e2e_pairs(mirror, tok), tok.pad_token_id))
    real, targets = int(batch["attention_mask"].sum()), len(batch["targets"])
    padded = batch["input_ids"].numel()

    targets_qv = ["q_proj", "v_proj"]
    lora = get_peft_model(load(folder), LoraConfig(r=1, lora_alpha=8, lora_dropout=0.0, target_modules=targets_qv))
    lora_count = trainable(lora)
    nola = load(folder)
    layers = nola.config.num_hidden_layers
    k = lora_count // (2 * 2 * layers)  # two roles, α and β of k each per layer
    inject(nola, NOLAConfig(rank=8, num_basis=k, c=4.0), targets_qv)
    q, v = nola.gpt2.model.layers[0].self_attn.q_proj, nola.gpt2.model.layers[0].self_attn.v_proj
    vera_r = round((lora_count / layers - q.out_features - v.out_features) / 2)  # λ_d (r) + λ_b (d_out) per projection
    vera = get_peft_model(load(folder), VeraConfig(r=vera_r, target_modules=targets_qv, vera_dropout=0.0))
    counts = {"NOLA": trainable(nola), "PEFT LoRA r=1": lora_count, "PEFT VeRA": trainable(vera)}

    with torch.no_grad():  # the two losses agree before anything is timed (tests/test_causal_objective.py checks 1e-6)
        own = nola(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        fast = target_nll_sum(target_logits(nola, batch), batch) / targets
        assert abs(own.item() - fast.item()) <= 1e-5 * abs(own.item()), (own.item(), fast.item())

    embed = nola.get_input_embeddings().weight
    p_head = embed.numel()
    p_body = sum(p.numel() for n, p in nola.gpt2.model.named_parameters() if not n.startswith("embed_tokens"))
    useful = 4 * (p_body * real + p_head * targets)
    a, b = torch.randn(MM, MM), torch.randn(MM, MM)
    mm_reps = 4
    systems = {
        "NOLA, naive labels= step": step_fn(nola, batch, fast=False),
        "NOLA, targets-only step": step_fn(nola, batch, fast=True),
        "PEFT LoRA r=1, targets-only step": step_fn(lora, batch, fast=True),
        "PEFT VeRA, targets-only step": step_fn(vera, batch, fast=True),
        f"torch.mm {MM}^2 x{mm_reps}": lambda _r: [torch.mm(a, b) for _ in range(mm_reps)],
    }
    load_start, start = os.getloadavg()[0], time.perf_counter()
    times = interleaved_times(systems, args.rounds, clock=time.process_time if args.clock == "cpu" else time.perf_counter)
    wall = time.perf_counter() - start
    med = {name: statistics.median(t) for name, t in times.items()}
    mm_rate = mm_reps * 2 * MM ** 3 / med[f"torch.mm {MM}^2 x{mm_reps}"]
    naive, fast_nola = med["NOLA, naive labels= step"], med["NOLA, targets-only step"]
    rows, results = [], []
    for name, t in times.items():
        row = {"system": name, "median_s": med[name], "min_s": min(t), "max_s": max(t), "times_s": t}
        if "step" in name:
            row["useful_gflops"] = useful / med[name] / 1e9
            row["of_mm_rate"] = useful / med[name] / mm_rate
            row["trainable"] = counts[name.split(",")[0]]
        results.append(row)
        rows.append([name, row.get("trainable", ""), med[name], f"{min(t):.3f}-{max(t):.3f}",
                     row.get("useful_gflops", ""), row.get("of_mm_rate", "")])
    print_table(f"One step, SmolLM2-135M, {PAIRS} E2E pairs: {real} real tokens, {padded} padded positions, "
                f"{targets} targets ({args.rounds} rounds)",
                ["system", "trainable", f"median s ({args.clock})", "min-max s", "useful GFLOP/s", "of mm rate"], rows)
    ratios = {
        "targets_only_speedup_vs_naive": naive / fast_nola,
        "nola_over_peft_lora_r1": fast_nola / med["PEFT LoRA r=1, targets-only step"],
        "nola_over_peft_vera": fast_nola / med["PEFT VeRA, targets-only step"],
        "targets_only_useful_of_mm_rate": useful / fast_nola / mm_rate,
    }
    for name, value in ratios.items():
        print(f"{name}: {value:.3f}")
    path = save_results("causal_step", {
        "note": "the machine was shared with other work while this ran (1-min load average "
                f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end); systems take turns in every round",
        "model": str(folder), "pairs": PAIRS, "real_tokens": real, "padded_positions": padded,
        "target_positions": targets, "p_body": p_body, "p_head": p_head, "useful_flops_per_step": useful,
        "flops_formula": "4 x (P_body x real tokens + P_head x target positions)",
        "nola": {"rank": 8, "num_basis": k, "targets": targets_qv}, "peft_lora": {"r": 1, "targets": targets_qv},
        "peft_vera": {"r": vera_r, "targets": targets_qv}, "trainable": counts, "mm_gflops": mm_rate / 1e9,
        "rounds": args.rounds, "threads": torch.get_num_threads(), "clock": args.clock, "wall_s": wall, "systems": results, "ratios": ratios})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
