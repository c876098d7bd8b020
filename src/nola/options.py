"""Flag groups shared by the scripts: model and adapter flags are defined here, once.

Adapter flags default to ``None`` so that a value the user typed can be told apart from a default:
decoding an adapter checkpoint takes its settings from the file, and only flags that were actually
given are checked against it.
"""
from __future__ import annotations

import argparse

from nola.errors import fail
from nola.config import BASIS_DTYPES, MODES, LoRAConfig, NOLAConfig, identity_fields
NOLA_IDENTITY, LORA_IDENTITY = identity_fields(NOLAConfig), identity_fields(LoRAConfig)

NOLA_DEFAULTS = {"rank": 0, "c": 1.0, "num_basis": 1000, "qv": False, "mlp": False, "seed": 0,
                 "seed_per_layer": False, "qbits": None}
LORA_DEFAULTS = {"dim": 0, "alpha": 128.0, "dropout": 0.0}
# Flag name -> config field.
NOLA_FLAGS = {"nola_rank": "rank", "nola_c": "c", "nola_num_basis": "num_basis", "nola_qv": "qv",
              "nola_mlp": "mlp", "nola_seed": "seed", "nola_seed_per_layer": "seed_per_layer", "qbits": "qbits"}
LORA_FLAGS = {"lora_dim": "dim", "lora_alpha": "alpha", "lora_dropout": "dropout"}


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """--model_card, --init_checkpoint, --base_checkpoint and every NOLA / LoRA flag."""
    g = parser.add_argument_group("model")
    g.add_argument("--model_card", default="gpt2.md",
                   help="gpt2.sm | gpt2.md | gpt2.lg, or a JSON file with GPT2Config keys")
    g.add_argument("--init_checkpoint", default=None,
                   help="GPT-2 weights (.bin/.safetensors, any published layout), an adapter "
                        "checkpoint written by gpt2_ft.py, or a full state dict")
    g.add_argument("--base_checkpoint", default=None,
                   help="base GPT-2 file for an adapter checkpoint whose recorded base has moved")

    n = parser.add_argument_group("NOLA")
    flag = {"action": "store_const", "const": True, "default": None}
    n.add_argument("--nola_rank", type=int, default=None, help="rank r of A and B (0: NOLA off)")
    n.add_argument("--nola_c", type=float, default=None, help="scale numerator: s = c / r (default 1.0)")
    n.add_argument("--nola_num_basis", type=int, default=None,
                   help="k = l, random basis matrices per factor (default 1000)")
    n.add_argument("--nola_qv", **flag, help="adapt the query and value projections")
    n.add_argument("--nola_mlp", **flag, help="adapt the two MLP projections")
    n.add_argument("--nola_seed", type=int, default=None, help="seed all bases derive from (default 0)")
    n.add_argument("--nola_seed_per_layer", **flag,
                   help="a basis per layer instead of one per role shared by all layers")
    n.add_argument("--qnola", action="store_true", help="quantisation-aware training of the coefficients")
    n.add_argument("--qbits", type=int, default=None, help="bits per coefficient with --qnola (2..8, default 3)")
    n.add_argument("--nola_mode", choices=("auto",) + MODES, default="auto",
                   help="basis execution: materialised (kept in memory), onthefly (regenerated in "
                        "chunks, no memory); auto = materialised on CPU, onthefly on CUDA")
    n.add_argument("--nola_basis_dtype", choices=tuple(BASIS_DTYPES), default="float32",
                   help="dtype of materialised bases")

    lo = parser.add_argument_group("LoRA (microsoft/LoRA baseline, via loralib)")
    lo.add_argument("--lora_dim", type=int, default=None, help="LoRA rank on q and v (0: off)")
    lo.add_argument("--lora_alpha", type=float, default=None, help="LoRA scaling numerator (default 128)")
    lo.add_argument("--lora_dropout", type=float, default=None, help="dropout on LoRA's input (default 0.0)")


def _given(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, object]:
    """Config fields whose flag the user actually set."""
    return {field: getattr(args, flag) for flag, field in flags.items() if getattr(args, flag) is not None}


def _nola_given(args: argparse.Namespace) -> dict[str, object]:
    given = _given(args, NOLA_FLAGS)
    if args.qnola:
        given["qbits"] = given.get("qbits", 3)
    elif "qbits" in given:
        fail("--qbits needs --qnola (quantised NOLA); add --qnola or drop --qbits")
    return given


def resolve_adapter(args: argparse.Namespace, device_type: str,
                    recorded: NOLAConfig | LoRAConfig | None = None) -> NOLAConfig | LoRAConfig | None:
    """The adapter to build: the checkpoint's (``recorded``) checked against the given flags, or
    one built from the flags. Contradictions and NOLA+LoRA together are errors."""
    nola = _nola_given(args)
    lora = _given(args, LORA_FLAGS)
    want_nola = nola.get("rank", 0) > 0 or any(k in nola for k in ("qv", "mlp", "qbits"))
    want_lora = lora.get("dim", 0) > 0
    if want_nola and want_lora:
        fail("NOLA (--nola_*) and LoRA (--lora_*) flags cannot be combined: choose one adapter")
    mode = args.nola_mode if args.nola_mode != "auto" else ("onthefly" if device_type == "cuda" else "materialised")
    runtime = {"mode": mode, "basis_dtype": args.nola_basis_dtype}
    if recorded is not None:
        return _check_recorded(recorded, nola if isinstance(recorded, NOLAConfig) else lora,
                               want_nola, want_lora, runtime)
    try:
        if want_nola:
            values = {**NOLA_DEFAULTS, **nola}
            if values["rank"] <= 0:
                fail("NOLA flags given without --nola_rank: add e.g. --nola_rank 8")
            if not (values["qv"] or values["mlp"]):
                fail("--nola_rank needs a target: add --nola_qv and/or --nola_mlp")
            return NOLAConfig(**values, **runtime)
        if want_lora:
            return LoRAConfig(**{**LORA_DEFAULTS, **lora})
    except ValueError as exc:
        fail(str(exc))
    return None


def _check_recorded(recorded, given: dict, want_nola: bool, want_lora: bool, runtime: dict):
    kind = "nola" if isinstance(recorded, NOLAConfig) else "lora"
    if (kind == "nola" and want_lora) or (kind == "lora" and want_nola):
        fail(f"the checkpoint holds a {kind.upper()} adapter but {'LoRA' if want_lora else 'NOLA'} "
             f"flags were given: drop them")
    identity = NOLA_IDENTITY if kind == "nola" else LORA_IDENTITY
    flags = {v: k for k, v in (NOLA_FLAGS if kind == "nola" else LORA_FLAGS).items()}
    for field in identity:
        if field in given and given[field] != getattr(recorded, field):
            fail(f"--{flags[field]} {given[field]} contradicts the checkpoint "
                 f"({field}={getattr(recorded, field)}): drop the flag or use the matching checkpoint")
    if kind == "nola":
        values = recorded.to_dict()
        values.update(runtime)
        return NOLAConfig(**values)
    return recorded
