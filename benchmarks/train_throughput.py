"""Training throughput on real E2E batches: the original's padded full-head step vs the trimmed step,
the validation pass, and the peers (PEFT LoRA and VeRA on transformers' GPT-2) on the same batches.

The batches are the E2E valid split (from $NOLA_DATA_MIRROR, encoded with the repo's tokenizer) in
the training sampler's order at the paper's flags (--seq_len 512, batch 8, seed 110); GPT-2 Medium
shapes with random weights, ``--layers`` of its 24 layers. Every system takes one step (zero_grad,
forward, loss, backward, AdamW) on batch r in round r, the systems taking turns; the median and the
spread over the rounds are reported. tokens/s counts the real tokens of the batches.

    python benchmarks/train_throughput.py [--quick] [--device auto|cpu|cuda] [--layers N] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Callable

import torch
from common import interleaved_times, machine, print_table, save_results
from torch.utils.data import default_collate

from nola.gpt2.data import FTDataset, convert, encode_file, make_loader, trim_collate
from nola.gpt2.dropout import pad_dropout_to
from nola.config import LoRAConfig, NOLAConfig
from nola.gpt2.model import GPT2Config, GPT2LMModel, lm_loss
from nola.gpt2.objective import MaskedLM, masked_nll_sum

PAPER_NOLA = dict(rank=8, num_basis=1000, c=1.0, qv=True)  # E2E GPT-2 M row: 24 x 2 x 2000 = 96,000
PAPER_LORA = dict(dim=4, alpha=32.0, dropout=0.1)
VERA_RANK = 928  # VeRA on c_attn trains r + 3072 per layer: 24 x (928 + 3072) = 96,000 = NOLA's count


def encoded_valid(out: Path) -> Path:
    """The E2E valid split, formatted and encoded as create_datasets.sh does."""
    mirror = os.environ.get("NOLA_DATA_MIRROR")
    if not mirror or not (Path(mirror) / "data" / "e2e" / "valid.txt").is_file():
        raise SystemExit("error: set NOLA_DATA_MIRROR to the data mirror (it needs data/e2e/valid.txt and vocab/)")
    convert("e2e", Path(mirror) / "data" / "e2e" / "valid.txt", out / "valid_formatted.jsonl")
    encode_file(out / "valid_formatted.jsonl", out / "valid.jsonl", Path(mirror) / "vocab")
    return out / "valid.jsonl"


def on(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def ours_step(model: GPT2LMModel, padded: bool, batches: list[dict], device) -> Callable[[int], None]:
    """padded: the original (full logits, lm_loss); else the trainer's MaskedLM on trimmed batches."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    net = MaskedLM(model)

    def step(r: int) -> None:
        b = batches[r]
        opt.zero_grad(set_to_none=True)
        if padded:
            logits, _ = model(b["input"])
            loss = lm_loss(logits, b["target"], b["mask"], 0.1)
        else:
            loss = net(b["input"], b["target"], b["mask"], b["positions"], 0.1) / (b["mask"].sum() + 1e-4)
        loss.backward()
        opt.step()

    return step


def hf_labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """transformers' shifted labels for our (target, mask): label t+1 is target t where mask t is 1."""
    labels = torch.full_like(batch["input"], -100)
    labels[:, 1:] = torch.where(batch["mask"][:, :-1] > 0, batch["target"][:, :-1], -100)
    return labels


def peft_step(model, batches: list[dict]) -> Callable[[int], None]:
    """A user's PEFT step on the same trimmed batches: attention mask, labels, the model's own loss."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step(r: int) -> None:
        b = batches[r]
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=b["input"], attention_mask=b["attention_mask"], labels=b["labels"])
        out.loss.backward()
        opt.step()

    return step


def peft_models(cfg: GPT2Config, device) -> dict[str, torch.nn.Module] | str:
    """PEFT LoRA r=4 and VeRA on transformers' GPT2LMHeadModel, or why they are missing."""
    try:
        import peft
        from transformers import GPT2Config as HFConfig, GPT2LMHeadModel
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        return f"peft not installed ({exc.name}): pip install -r benchmarks/requirements.txt"
    hf_logging.set_verbosity_error()
    hf_cfg = HFConfig(vocab_size=cfg.vocab_size, n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                      n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    adapters = {
        "PEFT LoRA r=4 (c_attn)": peft.LoraConfig(r=4, lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn"],
                                                  fan_in_fan_out=True),
        f"PEFT VeRA r={VERA_RANK} (c_attn)": peft.VeraConfig(r=VERA_RANK, target_modules=["c_attn"],
                                                            fan_in_fan_out=True, vera_dropout=0.0),
    }
    models = {}
    for name, adapter in adapters.items():
        torch.manual_seed(0)
        models[name] = peft.get_peft_model(GPT2LMHeadModel(hf_cfg), adapter).to(device).train()
    return models


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def summary(times: list[float], tokens: list[int]) -> dict:
    return {"seconds": times, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "tokens_per_s": sum(tokens) / sum(times)}


def training_rows(cfg: GPT2Config, data: FTDataset, args, device) -> tuple[list[dict], str | None]:
    loader = make_loader(data, args.batch, shuffle=True, seed=110, drop_last=True)
    loader.sampler.set_epoch(1)
    ids = list(loader.batch_sampler)[: args.rounds]
    padded = [on(default_collate([data[i] for i in b]), device) for b in ids]
    trimmed = [on(trim_collate([data[i] for i in b]), device) for b in ids]
    for b in trimmed:
        real = torch.arange(b["input"].shape[1], device=device) < b["length"][:, None]
        b["labels"], b["attention_mask"] = hf_labels(b), real.long()  # what a padding collator gives
    tokens = [int(b["length"].sum()) for b in trimmed]

    def ours(**adapter) -> GPT2LMModel:
        torch.manual_seed(0)
        nola = NOLAConfig(**{**PAPER_NOLA, **adapter["nola"]}) if "nola" in adapter else None
        lora = LoRAConfig(**{**PAPER_LORA, **adapter["lora"]}) if "lora" in adapter else None
        return GPT2LMModel(cfg, nola=nola, lora=lora).to(device).train()

    nola_mat, lora = ours(nola={"mode": "materialised"}), ours(lora={})
    pad_dropout_to(lora, args.seq_len)  # as the trainer does: the original's dropout draws
    lora_nodrop = ours(lora={"dropout": 0.0})
    systems = {
        "NOLA materialised, padded full head (original)": (nola_mat, ours_step(nola_mat, True, padded, device)),
        "NOLA materialised, trimmed + gathered (new)": (nola_mat, ours_step(nola_mat, False, trimmed, device)),
    }
    if not args.quick:
        nola_otf = ours(nola={"mode": "onthefly"})
        systems["NOLA onthefly, trimmed + gathered (new)"] = (nola_otf, ours_step(nola_otf, False, trimmed, device))
    if not args.quick:
        systems["LoRA r=4 loralib dropout 0.1, padded full head (original)"] = (lora, ours_step(lora, True, padded,
                                                                                              device))
    systems["LoRA r=4 loralib dropout 0.1, trimmed + gathered (new)"] = (lora, ours_step(lora, False, trimmed, device))
    systems["LoRA r=4 loralib dropout 0, trimmed + gathered (new)"] = (lora_nodrop,
                                                                       ours_step(lora_nodrop, False, trimmed, device))
    peers = peft_models(cfg, device)
    missing = peers if isinstance(peers, str) else None
    if missing:
        print(f"NOTE: {missing}; the PEFT rows are left out", flush=True)
    else:
        for name, model in peers.items():
            systems[name] = (model, peft_step(model, trimmed))
    times = interleaved_times({name: fn for name, (_, fn) in systems.items()}, args.rounds, device)
    rows = [{"system": name, "trainable": trainable(model), **summary(times[name], tokens)}
            for name, (model, _) in systems.items()]
    return rows, missing


def validation_rows(cfg: GPT2Config, data: FTDataset, args, device) -> list[dict]:
    model = GPT2LMModel(cfg, nola=NOLAConfig(**PAPER_NOLA, mode="materialised")).to(device).eval()
    groups = [list(range(s, min(s + 4, len(data)))) for s in range(0, len(data), 4)]
    total, groups = len(groups), groups[: args.valid_batches]
    padded = [on(default_collate([data[i] for i in g]), device) for g in groups]
    trimmed = [on(trim_collate([data[i] for i in g]), device) for g in groups]

    @torch.no_grad()
    def padded_pass(_: int) -> None:
        for b in padded:
            logits, _ = model(b["input"])
            nll = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), b["target"].flatten(), reduction="none")
            (nll * b["mask"].flatten()).sum().item()

    @torch.no_grad()
    def new_pass(_: int) -> None:
        for b in trimmed:
            masked_nll_sum(model, b)[0].item()

    with torch.no_grad():  # warm up on one batch: a whole pass is long on a GPU and teaches nothing more
        model(padded[0]["input"])
        masked_nll_sum(model, trimmed[0])
    rounds = 2
    times = interleaved_times({"padded full head (original)": padded_pass, "trimmed + gathered (new)": new_pass},
                              rounds, device, warmup=False)
    tokens = [sum(int(b["length"].sum()) for b in trimmed)] * rounds
    return [{"system": name, "batches": len(groups), "of_batches": total, **summary(t, tokens)}
            for name, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 layer, batch 2, 2 rounds, 1 validation batch, no on-the-fly or padded LoRA row")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--layers", type=int, default=None, help="GPT-2 M layers timed (default 24 on GPU, 4 on CPU)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; --quick 2)")
    parser.add_argument("--valid_batches", type=int, default=None,
                        help="validation batches of 4 timed (default: the whole split on GPU, 16 on CPU)")
    parser.add_argument("--out", default=None, help="result JSON (default benchmarks/results/train_throughput*.json)")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    gpu = device.type == "cuda"
    args.seq_len, args.batch = 512, (2 if args.quick else 8)
    args.rounds = args.rounds or (2 if args.quick else 5)
    layers = args.layers or (1 if args.quick else (24 if gpu else 4))
    if args.valid_batches is None and not gpu:
        args.valid_batches = 1 if args.quick else 16
    cfg = GPT2Config.from_card("gpt2.md")
    cfg.n_layer = layers
    with tempfile.TemporaryDirectory() as tmp:
        data = FTDataset(encoded_valid(Path(tmp)), args.seq_len)
    train, missing = training_rows(cfg, data, args, device)
    valid = validation_rows(cfg, data, args, device)

    where = f"GPT-2 M shapes, {layers} of 24 layers, random weights, {device.type}"
    base = next(r for r in train if r["system"].startswith("NOLA materialised, padded"))
    new = next(r for r in train if r["system"].startswith("NOLA materialised, trimmed"))
    loralib = next(r for r in train if r["system"].startswith("LoRA r=4 loralib dropout 0.1, trimmed"))
    peft_lora = next((r for r in train if r["system"].startswith("PEFT LoRA")), None)
    headers = ["system", "trainable", "s/step (min-max)", "real tokens/s", "x padded", "x loralib"]
    headers += ["x PEFT LoRA"] if peft_lora else []
    table = []
    for r in train:
        row = [r["system"], r["trainable"], f"{r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f})",
               r["tokens_per_s"], base["median_s"] / r["median_s"], loralib["median_s"] / r["median_s"]]
        table.append(row + ([peft_lora["median_s"] / r["median_s"]] if peft_lora else []))
    print_table(f"Training step, E2E batches of {args.batch} in sampler order, seq_len {args.seq_len} ({where}); "
                "x = speed relative to the column's system", headers, table)
    if missing:
        print(f"PEFT rows missing: {missing}\n")
    vbase = valid[0]
    print_table(f"Validation pass, {valid[0]['batches']} of {valid[0]['of_batches']} batches of 4 ({where})",
                ["system", "s/pass (min-max)", "real tokens/s", "x padded"],
                [[r["system"], f"{r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f})", r["tokens_per_s"],
                  vbase["median_s"] / r["median_s"]] for r in valid])
    print(f"new step vs padded full head: {base['median_s'] / new['median_s']:.2f}x (goal >= 5x)")
    payload = {"layers": layers, "batch": args.batch, "seq_len": args.seq_len, "rounds": args.rounds,
               "device": device.type, "peft_missing": missing, "train": train, "valid": valid,
               "load_average": os.getloadavg()}
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), **payload}, indent=1) + "\n")
        path = Path(args.out)
    else:
        path = save_results("train_throughput" + ("_quick" if args.quick else "") + ("_cuda" if gpu else ""), payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
