"""Configuration dataclasses: the single source of every setting's default, help text and check.

Each field is declared with :func:`option`, which records in the field's metadata the flag name
(the paper's / microsoft/LoRA's spelling), the help text, a check and whether the field
*identifies* an adapter (changes its numbers, so a checkpoint's value must not be contradicted).
:mod:`nola.cli` turns these dataclasses into argparse flags and back; the library only ever sees
config objects. Adding a setting means adding one field here.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Callable

Check = Callable[[Any], "str | None"]


def option(default: Any = MISSING, help: str = "", *, flag: str | None = None, identity: bool = False,
           check: Check | None = None, choices: tuple | None = None, cli: bool = True,
           short_help: str | None = None) -> Any:
    """A dataclass field with the metadata :mod:`nola.cli` and :func:`validate` read.

    ``flag``: the command-line name (default: the field name); ``check``: returns an error text for
    a bad value, or None; ``choices``: the allowed values; ``cli``: whether a flag exists.
    """
    meta = {"help": help, "flag": flag, "identity": identity, "check": check, "choices": choices, "cli": cli}
    if isinstance(default, (list, dict, set)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f) -> str:
    """The command-line flag of a dataclass field (without dashes)."""
    return f.metadata.get("flag") or f.name


def at_least(low: float) -> Check:
    return lambda v: None if v is None or (_finite(v) and v >= low) else f"must be a number >= {low}"


def in_range(low: float, high: float, *, high_open: bool = False) -> Check:
    def check(v):
        if v is None:
            return None
        ok = _finite(v) and low <= v and (v < high if high_open else v <= high)
        return None if ok else f"must be in [{low}, {high}{')' if high_open else ']'}"
    return check


def finite(v) -> str | None:
    return None if v is None or _finite(v) else "must be a finite number"


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate(cfg: object) -> None:
    """Run every field's check and choices; raise ``ValueError`` naming the flag and the value."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ValueError(f"--{flag_of(f)} {value!r}: must be one of {', '.join(map(str, choices))}")
        check = f.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise ValueError(f"--{flag_of(f)} {value}: {problem}")


def identity_fields(cls: type) -> tuple[str, ...]:
    """Fields whose values change an adapter's numbers (checked against checkpoints)."""
    return tuple(f.name for f in fields(cls) if f.metadata.get("identity"))


MODES = ("materialised", "onthefly")
BASIS_DTYPES = ("float32", "bfloat16", "float64")


@dataclass
class NOLAConfig:
    """A NOLA adapter: ΔW = s·A·B, A = Σ αᵢAᵢ, B = Σ βⱼBⱼ, s = c/r (stored in every adapter file)."""

    rank: int = option(8, "rank r of A and B", flag="nola_rank", identity=True, check=at_least(1))
    num_basis: int = option(1000, "k = l, random basis matrices per factor", flag="nola_num_basis",
                            identity=True, check=at_least(1))
    c: float = option(1.0, "scale numerator: s = c / r", flag="nola_c", identity=True, check=finite)
    qv: bool = option(False, "adapt the query and value projections (GPT-2)", flag="nola_qv", identity=True)
    mlp: bool = option(False, "adapt the two MLP projections (GPT-2)", flag="nola_mlp", identity=True)
    seed: int = option(0, "seed all bases derive from", flag="nola_seed", identity=True, check=at_least(0))
    seed_per_layer: bool = option(False, "a basis per layer instead of one per role shared by all layers",
                                  flag="nola_seed_per_layer", identity=True)
    qbits: int | None = option(None, "bits per coefficient with --qnola (2..8, default 3)", flag="qbits",
                               identity=True, check=in_range(2, 8))
    mode: str = option("materialised", "basis execution: materialised (kept in memory) or onthefly "
                       "(regenerated in chunks, no memory)", flag="nola_mode", choices=MODES, cli=False)
    basis_dtype: str = option("float32", "dtype of materialised bases", flag="nola_basis_dtype",
                              choices=BASIS_DTYPES)
    chunk_rows: int = option(128, "basis rows generated at a time on the fly", cli=False, check=at_least(1))

    def __post_init__(self) -> None:
        validate(self)

    @property
    def scale(self) -> float:
        """s = c / r."""
        return self.c / self.rank

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoRAConfig:
    """microsoft/LoRA's NLG baseline: loralib on the query and value of the fused projection."""

    dim: int = option(4, "LoRA rank on q and v", flag="lora_dim", identity=True, check=at_least(1))
    alpha: float = option(128.0, "LoRA scaling numerator (scale = alpha / dim)", flag="lora_alpha",
                          identity=True, check=finite)
    dropout: float = option(0.0, "dropout on LoRA's input", flag="lora_dropout",
                            check=in_range(0.0, 1.0, high_open=True))

    def __post_init__(self) -> None:
        validate(self)

    @property
    def scale(self) -> float:
        return self.alpha / self.dim

    def to_dict(self) -> dict:
        return asdict(self)


AdapterConfig = NOLAConfig | LoRAConfig


def adapter_from_dict(kind: str | None, values: dict | None) -> AdapterConfig | None:
    """Rebuild the adapter config recorded as ``kind`` ('nola' / 'lora') and ``values``."""
    if kind == "nola":
        return NOLAConfig(**values)
    if kind == "lora":
        return LoRAConfig(**values)
    return None


def adapter_kind(cfg: AdapterConfig | None) -> str | None:
    return None if cfg is None else ("nola" if isinstance(cfg, NOLAConfig) else "lora")
