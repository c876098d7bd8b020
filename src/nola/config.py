"""Configuration dataclasses: the single source of every setting's default, help text and check.

Each field is declared with :func:`option`, which records in the field's metadata the flag name
(the paper's / microsoft/LoRA's spelling), the help text, a check and whether the field
*identifies* an adapter (changes its numbers, so a checkpoint's value must not be contradicted).
:mod:`nola.train.cli` turns these dataclasses into argparse flags and back; the library only ever sees
config objects. Adding a setting means adding one field here.
"""
from __future__ import annotations

import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Callable

Check = Callable[[Any], "str | None"]


def option(default: Any = MISSING, help: str = "", *, flag: str | None = None, identity: bool = False,
           check: Check | None = None, choices: tuple | None = None, cli: bool = True,
           aliases: tuple[str, ...] = ()) -> Any:
    """A dataclass field with the metadata :mod:`nola.train.cli` and :func:`validate` read.

    ``flag``: the command-line name (default: the field name); ``check``: returns an error text for
    a bad value, or None; ``choices``: the allowed values; ``cli``: whether a flag exists;
    ``aliases``: other spellings of the flag.
    """
    meta = {"help": help, "flag": flag, "identity": identity, "check": check, "choices": choices, "cli": cli,
            "aliases": aliases}
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


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def nonzero(v) -> str | None:
    return None if v is None or (_finite(v) and v != 0) else "must be a finite non-zero number"


def above(low: float) -> Check:
    return lambda v: None if v is None or (_finite(v) and v > low) else f"must be a number > {low}"


def _check_field(f, value) -> None:
    """Every float must be finite (whatever the field's own check); then choices, then the check."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"--{flag_of(f)} {value}: must be a finite number")
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"--{flag_of(f)} {value!r}: must be one of {', '.join(map(str, choices))}")
    check = f.metadata.get("check")
    problem = check(value) if check else None
    if problem:
        raise ValueError(f"--{flag_of(f)} {value}: {problem}")


def validate(cfg: object) -> None:
    """Run every field's check and choices; raise ``ValueError`` naming the flag and the value."""
    for f in fields(cfg):
        _check_field(f, getattr(cfg, f.name))


def validate_values(cls: type, values: dict) -> None:
    """:func:`validate` for the given fields of ``cls`` only (settings a user typed, before a
    checkpoint's record fills in the rest)."""
    for f in fields(cls):
        if f.name in values:
            _check_field(f, values[f.name])


def identity_fields(cls: type) -> tuple[str, ...]:
    """Fields whose values change an adapter's numbers (checked against checkpoints)."""
    return tuple(f.name for f in fields(cls) if f.metadata.get("identity"))


MODES = ("materialised", "onthefly")
BASIS_DTYPES = ("float32", "bfloat16", "float64")


@dataclass
class NOLAConfig:
    """A NOLA adapter: ΔW = s·A·B, A = Σ αᵢAᵢ, B = Σ βⱼBⱼ, s = c/r (stored in every adapter file)."""

    rank: int = option(8, "rank r of A and B; NOLA is on when this (above 0), --nola_qv, "
                       "--nola_mlp or --qnola is given", flag="nola_rank", identity=True, check=at_least(1))
    num_basis: int = option(1000, "k = l, random basis matrices per factor", flag="nola_num_basis",
                            identity=True, check=at_least(1))
    c: float = option(1.0, "scale numerator: s = c / r", flag="nola_c", identity=True, check=nonzero)
    qv: bool = option(False, "adapt the query and value projections (GPT-2)", flag="nola_qv", identity=True)
    mlp: bool = option(False, "adapt the two MLP projections (GPT-2)", flag="nola_mlp", identity=True)
    seed: int = option(0, "seed all bases derive from", flag="nola_seed", identity=True,
                      check=in_range(0, 1 << 64, high_open=True))
    seed_per_layer: bool = option(False, "a basis per layer instead of one per role shared by all layers",
                                  flag="nola_seed_per_layer", identity=True)
    qbits: int | None = option(None, "bits per coefficient with --qnola (2..8; 3 when --qnola comes alone)", flag="qbits",
                               identity=True, check=in_range(2, 8))
    mode: str = option("materialised", "basis execution: materialised (kept in memory) or onthefly "
                       "(regenerated in chunks, no memory)", flag="nola_mode", choices=MODES, cli=False)
    basis_dtype: str = option("float32", "dtype of materialised bases", flag="nola_basis_dtype",
                              choices=BASIS_DTYPES)
    chunk_rows: int = option(128, "basis rows generated at a time on the fly", cli=False, check=at_least(1))
    target_modules: list[str] | None = option(None, "module names to adapt (nola.inject's default targets)",
                                              cli=False)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def scale(self) -> float:
        """s = c / r."""
        return self.c / self.rank

    def to_dict(self) -> dict:
        """The fields; ``target_modules`` only when set (checkpoints record their targets on their own)."""
        values = asdict(self)
        if values["target_modules"] is None:
            del values["target_modules"]
        return values


@dataclass
class LoRAConfig:
    """microsoft/LoRA's NLG baseline: loralib on the query and value of the fused projection."""

    dim: int = option(4, "LoRA rank on q and v; LoRA is on when this is given above 0",
                     flag="lora_dim", identity=True, check=at_least(1))
    alpha: float = option(128.0, "LoRA scaling numerator (scale = alpha / dim)", flag="lora_alpha",
                          identity=True, check=nonzero)
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


DEFAULT_QBITS = 3  # bits per coefficient when --qnola is given without --qbits
EOS_ID = 50256  # GPT-2's <|endoftext|>
SCHEDULERS = ("linear", "cosine", "constant", "cycle")


@dataclass(kw_only=True)
class LaunchConfig:
    """Where and how a process runs: launcher rank, device, threads, seed."""

    platform: str = option("local", "local: env:// rendezvous from the launcher (NCCL on CUDA, Gloo on CPU)",
                           choices=("local", "k8s"))
    local_rank: int | None = option(None, "set by torch.distributed.launch; torchrun uses LOCAL_RANK instead",
                                    aliases=("local-rank",), check=at_least(0))
    device: str = option("auto", "auto: CUDA when available", choices=("auto", "cpu", "cuda"))
    threads: int | None = option(None, "CPU threads per process (default: cores / local ranks)", check=at_least(1))
    random_seed: int = option(10, "seed for data order, dropout and init",
                              check=in_range(0, 1 << 63, high_open=True))
    dist_timeout: int = option(1800, "seconds a process waits for the others in a collective (or the start) "
                               "before the job stops with an error naming the rank and step", check=at_least(1))

    def __post_init__(self) -> None:
        validate(self)


def auto_mode(device_type: str) -> str:
    """``--nola_mode auto``: bases regenerated on the fly on CUDA (no memory), kept in memory elsewhere."""
    return "onthefly" if device_type == "cuda" else "materialised"


@dataclass(kw_only=True)
class ModelSource:
    """Which GPT-2 to build and from which file; the NOLA execution mode is chosen here because
    ``auto`` depends on the device."""

    model_card: str = option("gpt2.md", "gpt2.sm | gpt2.md | gpt2.lg, or a JSON file with GPT2Config keys")
    init_checkpoint: str | None = option(None, "GPT-2 weights (.bin/.safetensors, any published layout), an "
                                         "adapter checkpoint written by gpt2_ft.py, or a full state dict")
    base_checkpoint: str | None = option(None, "base GPT-2 file for an adapter checkpoint (or a --resume run) "
                                         "whose recorded base has moved")
    nola_mode: str = option("auto", "basis execution: materialised (kept in memory), onthefly (regenerated "
                            "in chunks, no memory); auto = materialised on CPU, onthefly on CUDA",
                            choices=("auto",) + MODES)

    def __post_init__(self) -> None:
        validate(self)

    def mode_for(self, device_type: str) -> str:
        return auto_mode(device_type) if self.nola_mode == "auto" else self.nola_mode


@dataclass(kw_only=True)
class RunIO:
    """Sequence length and output folder, shared by training and decoding (one definition each)."""

    seq_len: int = option(512, "tokens per example (decoding: context room = seq_len - eval_len)",
                          check=at_least(2))
    work_dir: str | None = option(None, "output folder (gpt2_ft.py: default the --resume folder, else "
                                  "$PT_OUTPUT_DIR, else gpt2_model; gpt2_beam.py: default gpt2_model)")


@dataclass(kw_only=True)
class RunControl:
    """The resume and stop flags of every training script (gpt2_ft.py, llama_ft.py, vit_ft.py), declared
    once. Their help names the script's own output-folder flag (``FOLDER``), outputs (``OUTPUTS``) and
    step (``STEP``): :func:`nola.train.cli.add_flags` fills in ``{folder}``, ``{outputs}`` and ``{step}``."""

    FOLDER, OUTPUTS, STEP = "--work_dir", "log.jsonl, resume.pt and model.<step>/ (or model.<step>.pt)", "step"

    resume: str | None = option(None, "continue the interrupted run saved in this folder (the {folder} of that "
                                "run) or its resume.pt")
    stop_at_step: int | None = option(None, "end this session after this {step} with a save, the schedule "
                                      "unchanged; continue later with --resume", check=at_least(1))
    overwrite: bool = option(False, "start afresh when {folder} holds an earlier run: delete its {outputs} "
                             "first (without it such a start is refused)")


@dataclass(kw_only=True)
class TrainConfig(RunIO, RunControl):
    """microsoft/LoRA's NLG training flags (their names), plus resume and stop controls."""

    train_data: str = option(help="encoded training jsonl (create_datasets.sh)")
    valid_data: str = option(help="encoded validation jsonl")
    train_batch_size: int = option(8, "batch per process", check=at_least(1))
    valid_batch_size: int = option(4, "validation batch per process", check=at_least(1))
    grad_acc: int = option(1, "batches per optimiser update", check=at_least(1))
    clip: float = option(0.0, "max gradient norm (0: no clipping)", check=at_least(0))
    obj: str = option("clm", "clm: loss on the completion only; jlm: joint LM, loss on context and completion",
                      choices=("clm", "jlm"))
    label_smooth: float = option(0.0, "label smoothing of the training loss", check=in_range(0, 1, high_open=True))
    fp16: bool = option(False, "mixed precision: fp16 autocast + loss scaling on CUDA, bf16 autocast on CPU")
    bf16: bool = option(False, "bf16 autocast (CUDA with bf16 support, or CPU)")
    log_interval: int = option(100, "steps per training log line", check=at_least(1))
    eval_interval: int = option(2000, "steps per validation", check=at_least(1))
    eval_epoch: int = option(1, "validate at the end of every N-th epoch", check=at_least(1))
    save_interval: int = option(500, "steps per checkpoint (one is also written at every epoch end)",
                                check=at_least(1))
    save_full: bool = option(False, "checkpoints hold the full state dict (as the original code), not just "
                             "the adapter")

    def __post_init__(self) -> None:
        validate(self)
        if self.fp16 and self.bf16:
            raise ValueError("--fp16 and --bf16 exclude each other: choose one")


@dataclass(kw_only=True)
class OptimConfig:
    """microsoft/LoRA's optimiser and schedule flags, same names and defaults (``--adam_epislon`` sic)."""

    lr: float = option(1e-5, "peak learning rate", check=at_least(0))
    weight_decay: float = option(0.01, "decoupled weight decay", check=at_least(0))
    correct_bias: bool = option(False, "Adam bias correction (off unless given)")
    adam_epsilon: float = option(1e-6, "Adam epsilon (both spellings)", flag="adam_epislon",
                                aliases=("adam_epsilon",), check=above(0))
    no_decay_bias: bool = option(False, "no weight decay on biases and LayerNorm weights")
    adam_beta1: float = option(0.9, "Adam beta1", check=in_range(0, 1, high_open=True))
    adam_beta2: float = option(0.98, "Adam beta2", check=in_range(0, 1, high_open=True))
    scheduler: str = option("linear", "linear/cosine decay to 0 at max_step, constant, or cycle (--i_steps/--i_lrs)",
                            choices=SCHEDULERS)
    warmup_step: int = option(0, "linear warm-up batches", check=at_least(0))
    max_step: int | None = option(None, "batches to train (default: max_epoch x batches per epoch / world size)",
                                  check=at_least(1))
    max_epoch: int | None = option(None, "epochs to train", check=at_least(1))
    i_steps: str = option("0", "cycle: comma-separated steps of the lr knots")
    i_lrs: str = option("0.00025", "cycle: comma-separated lrs at those steps")

    def __post_init__(self) -> None:
        validate(self)
        if self.max_step is None and self.max_epoch is None and self.scheduler != "cycle":
            raise ValueError("give --max_epoch (as the paper's commands do) or --max_step")


@dataclass(kw_only=True)
class BeamSettings:
    """The decoding rule's knobs (microsoft/LoRA's gpt2_beam.py flags and defaults)."""

    beam: int = option(1, "beam size (1: greedy)", check=at_least(1))
    eval_len: int = option(256, "maximum number of generated tokens", check=at_least(1))
    length_penalty: float = option(1.0, "finished score = sum_logprob / n_generated ** length_penalty")
    no_repeat_ngram_size: int = option(4, "ban any n-gram of this size already generated (0: off)", check=at_least(0))
    repetition_penalty: float = option(1.0, "CTRL penalty on the logits of tokens already generated (1.0: off)",
                                       check=above(0))
    min_length: int = option(0, "EOS is banned before this many tokens", check=at_least(0))
    eos_ids: tuple[int, ...] = option((EOS_ID,), "an end-of-sequence token; each use adds one to the default "
                                      "50256", flag="eos_token_id", check=lambda v: None if all(
                                          isinstance(t, int) and t >= 0 for t in v) else "must be >= 0")

    def __post_init__(self) -> None:
        self.eos_ids = tuple(dict.fromkeys(int(t) for t in self.eos_ids))
        validate(self)


@dataclass(kw_only=True)
class DecodeConfig(RunIO):
    """What gpt2_beam.py decodes and where it writes."""

    data: str = option(help="encoded jsonl to decode (e.g. ./data/e2e/test.jsonl)")
    batch_size: int = option(10, "distinct contexts decoded together", check=at_least(1))
    output_file: str = option("beam_prediction.jsonl", 'jsonl of {"id", "predict"} per input line, in input order')

    def __post_init__(self) -> None:
        validate(self)

    @property
    def output_path(self) -> str:
        return os.path.join(self.work_dir or "gpt2_model", self.output_file)


@dataclass
class AdapterRequest:
    """The adapter settings a user actually gave (config field -> value), before any checkpoint's
    record is consulted: decoding takes an adapter's settings from its file, and only what was
    given is checked against it."""

    nola: dict = field(default_factory=dict)
    lora: dict = field(default_factory=dict)
    peft: dict = field(default_factory=dict)  # {"method": ..., "options": {...}}: a PEFT baseline (causal LMs)

    @property
    def wants_nola(self) -> bool:
        """``--nola_rank`` above 0, or a target or bit width given."""
        return self.nola.get("rank", 0) > 0 or any(k in self.nola for k in ("qv", "mlp", "qbits"))

    @property
    def wants_lora(self) -> bool:
        """``--lora_dim`` above 0 (microsoft/LoRA: 0 means no LoRA)."""
        return self.lora.get("dim", 0) > 0

    def conflict(self) -> str | None:
        """The one message for adapters asked for together (None when at most one is)."""
        asked = [name for name, wanted in (("NOLA (--nola_*, --qnola)", self.wants_nola),
                                           ("LoRA (--lora_*)", self.wants_lora),
                                           (f"PEFT's {self.peft.get('method')} (--peft_method)", bool(self.peft)))
                 if wanted]
        if len(asked) < 2:
            return None
        return f"{' and '.join(asked)} flags cannot be combined: choose one adapter"


# The seven linear projections of every LLaMA decoder layer (what qlora.py's find_all_linear_names finds).
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LLAMA_BITS = (4, 8, 16, 32)


@dataclass(kw_only=True)
class LlamaSource:
    """Which causal LM to load and how (UCDvision/NOLA llama/qlora.py's flags and defaults, but 16 bits
    by default: 4 and 8 need CUDA and bitsandbytes)."""

    model_name_or_path: str = option(help="a transformers causal LM folder or hub name (meta-llama/Llama-2-7b-hf); "
                                     "its tokenizer is loaded from the same place")
    bits: int = option(16, "base weights: 4 (NF4, double quantisation), 8 (LLM.int8) via bitsandbytes on CUDA; "
                       "16 (bf16 with --bf16, else fp16) or 32 (float32)", choices=LLAMA_BITS)
    bf16: bool = option(False, "bf16 base weights (--bits 16) / 4-bit compute dtype, and bf16 autocast")
    target_modules: str = option(",".join(LLAMA_PROJECTIONS), "comma-separated module names that get the adapter "
                                 "(default: all seven LLaMA linear projections)")

    def __post_init__(self) -> None:
        validate(self)
        if not self.targets:
            raise ValueError("--target_modules is empty: name at least one projection, e.g. q_proj,v_proj")

    @property
    def targets(self) -> list[str]:
        return [t.strip() for t in self.target_modules.split(",") if t.strip()]


@dataclass(kw_only=True)
class AlpacaTrainConfig(RunControl):
    """Instruction tuning as UCDvision/NOLA llama/qlora.py does it (QLoRA's flags and defaults), or
    data-to-text on the same loop; one step is one optimiser update over
    ``per_device_train_batch_size x gradient_accumulation_steps x processes`` examples, as in the
    Hugging Face Trainer."""

    FOLDER, OUTPUTS, STEP = "--output_dir", "log.jsonl, resume.pt and adapter files", "update"

    dataset: str = option("alpaca", "alpaca (data/alpaca/alpaca_data.json, scripts/llama/download_data.sh), "
                          "a JSON file of {instruction, input, output} records, or a data-to-text file named "
                          "*_formatted.jsonl (E2E / WebNLG / DART, as create_datasets.sh writes them)")
    eval_dataset: str | None = option(None, "a file of the same kinds whose validation loss (token-mean NLL of "
                                      "its targets) is logged every --eval_steps updates and after the last")
    eval_steps: int | None = option(None, "updates per validation (default: only after the last update)",
                                    check=at_least(1))
    per_device_eval_batch_size: int = option(8, "examples per validation batch per process", check=at_least(1))
    output_dir: str | None = option(None, "adapter folder and resume.pt (default: the --resume folder)")
    source_max_len: int = option(1024, "prompt tokens kept (truncated on the right)", check=at_least(1))
    target_max_len: int = option(256, "response tokens kept (truncated on the right)", check=at_least(1))
    per_device_train_batch_size: int = option(1, "examples per micro-batch per process", check=at_least(1))
    gradient_accumulation_steps: int = option(16, "micro-batches per optimiser update", check=at_least(1))
    max_steps: int = option(10000, "optimiser updates", check=at_least(1))
    lr: float = option(2e-4, "learning rate", aliases=("learning_rate",), check=at_least(0))
    lr_scheduler_type: str = option("constant", "constant, linear or cosine (Hugging Face's 'constant' "
                                    "has no warm-up)", choices=("constant", "linear", "cosine"))
    warmup_steps: int = option(0, "linear warm-up updates", check=at_least(0))
    adam_beta1: float = option(0.9, "Adam beta1", check=in_range(0, 1, high_open=True))
    adam_beta2: float = option(0.999, "Adam beta2", check=in_range(0, 1, high_open=True))
    adam_epsilon: float = option(1e-8, "Adam epsilon", check=above(0))
    weight_decay: float = option(0.0, "decoupled weight decay", check=at_least(0))
    max_grad_norm: float = option(0.3, "gradient clipping norm (0: none)", check=at_least(0))
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (saves memory)")
    logging_steps: int = option(10, "updates per log line", check=at_least(1))
    save_steps: int = option(250, "updates per adapter + resume.pt save (also at the end)", check=at_least(1))
    train_seed: int = option(0, "seed of the data order and everything random", flag="seed",
                             check=in_range(0, 1 << 63, high_open=True))

    def __post_init__(self) -> None:
        validate(self)


# The scorers' file layouts (src/gpt2_decode.py, src/llama_beam.py): reference layout, WebNLG category
# filter, how a context with fewer than --ref_num references is padded.
REF_TYPES = ("e2e", "webnlg", "dart")
FILTERS = ("all", "seen", "unseen")
PADS = ("first", "empty")


@dataclass(kw_only=True)
class CausalDecodeConfig:
    """src/llama_beam.py: which data-to-text file a causal LM decodes and where the scorers' files go
    (gpt2_decode.py's layout and flags)."""

    data: str = option(help="formatted jsonl of {context, completion} (e.g. data/e2e/test_formatted.jsonl)")
    adapter: str | None = option(None, "adapter folder written by llama_ft.py, merged into the base before decoding")
    batch_size: int = option(10, "distinct contexts decoded together", check=at_least(1))
    max_contexts: int | None = option(None, "decode only the first N distinct contexts (and write only their "
                                      "references)", check=at_least(1))
    output_ref_file: str = option(help="reference file (e2e) or folder (webnlg, dart)")
    output_pred_file: str = option(help="prediction file, one line per distinct context")
    ref_type: str = option("e2e", "reference layout", choices=REF_TYPES)
    ref_num: int = option(4, "number of reference files (webnlg, dart)", check=at_least(1))
    ref_pad: str = option("first", "webnlg/dart contexts with fewer than --ref_num references: repeat the first "
                          "reference (the original pipeline) or write empty lines", choices=PADS)
    tokenize: bool = option(False, "split off every non-word character")
    lower: bool = option(False, "lower-case references and predictions")
    filter: str = option("all", "WebNLG: only contexts whose category was seen / unseen in training", choices=FILTERS)

    def __post_init__(self) -> None:
        validate(self)


@dataclass(kw_only=True)
class MMLUConfig:
    """What eval/mmlu.py scores (Hendrycks et al.'s test/evaluate.py protocol) and where it writes."""

    data_dir: str = option("data/mmlu", "MMLU in the official layout: dev/<subject>_dev.csv, test/<subject>_test.csv")
    split: str = option("test", "the split scored (test, or val: val/<subject>_val.csv)", choices=("test", "val"))
    shots: int = option(5, "dev examples before each question (fewer when the prompt exceeds --max_len)",
                        check=at_least(0))
    max_len: int = option(2048, "longest prompt in tokens; longer ones drop dev examples (as the original)",
                          check=at_least(1))
    subjects: str | None = option(None, "comma-separated subjects (default: every subject in the split)")
    adapter: str | None = option(None, "an adapter folder written by llama_ft.py (merged into the base)")
    output: str = option("mmlu_results.json", "results JSON (per subject and averaged), written atomically")

    def __post_init__(self) -> None:
        validate(self)


@dataclass(kw_only=True)
class MergeConfig:
    """src/llama_merge.py: an adapter folded into its base, written as a plain transformers model."""

    adapter: str = option(help="adapter folder written by llama_ft.py")
    output_dir: str = option(help="new folder for the merged model and its tokenizer (must not exist)")

    def __post_init__(self) -> None:
        validate(self)


VIT_ARCHS = ("base", "large", "toy")
VIT_TRAIN_TYPES = ("linear", "full", "lora", "nola", "nola_mlp")


@dataclass(kw_only=True)
class ViTConfig(RunControl):
    """k-shot image classification with a ViT (UCDvision/NOLA vit/train_timm.py's flags and defaults,
    unused ones left out; ``--seed``, ``--augment``, ``--nola_seed`` and the resume flags are new)."""

    FOLDER, OUTPUTS, STEP = "--outdir", "outputs", "step"

    train_data_path: str = option(help="folder holding train/<class>/<image> (ImageFolder layout)")
    val_data_path: str | None = option(None, "folder holding val/<class>/<image> (default: --train_data_path)")
    outdir: str | None = option(None, "output folder: adapter/model file, result.json, log.jsonl, resume.pt "
                                "(default: the --resume folder)")
    vit: str = option("base", "base / large: timm's vit_base_patch16_224 / vit_large_patch16_224 (pre-trained, "
                      "needs timm); toy: a tiny random ViT of timm's layout (tests, CPU)", choices=VIT_ARCHS)
    train_type: str = option("linear", "linear (head only), full, lora (q, v), nola (q, v) or nola_mlp (fc1, "
                             "fc2); the re-made head trains in every one", choices=VIT_TRAIN_TYPES)
    rank: int = option(4, "rank of LoRA and NOLA", check=at_least(1))
    ka: int = option(1024, "k = l, NOLA bases per factor (the official --ka; --kb is the same)", check=at_least(1))
    nola_seed: int = option(0, "seed all NOLA bases derive from (one basis per role, shared by all blocks)",
                            check=in_range(0, 1 << 64, high_open=True))
    kshot: int = option(0, "images per class for training (0: every image)", check=at_least(0))
    kshot_seed: int = option(0, "seed of the k-shot choice", check=in_range(0, 1 << 63, high_open=True))
    seed: int = option(0, "seed of the head's initialisation, the data order and the augmentation",
                       check=in_range(0, 1 << 62, high_open=True))
    batch_size: int = option(16, "training batch (the last incomplete batch of an epoch is dropped)",
                             aliases=("bs",), check=at_least(1))
    eval_batch_size: int = option(256, "evaluation batch", check=at_least(1))
    lr: float = option(1e-3, "Adam learning rate (no weight decay)", check=above(0))
    min_lr: float = option(1e-6, "eta_min of the cosine schedule over the epochs", check=at_least(0))
    epochs: int = option(20, "epochs; the learning rate follows CosineAnnealingLR(T_max=epochs) per epoch",
                         check=at_least(1))
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy",
                                    check=in_range(0, 1, high_open=True))
    augment: str = option("official", "official: the vit/ augmentation (needs torchvision); none: the "
                          "evaluation transform (resize + centre crop) for training too", choices=("official", "none"))
    fp16: bool = option(False, "fp16 autocast with loss scaling (CUDA only), as the official AMP")
    num_workers: int = option(4, "data loading processes", check=at_least(0))

    def __post_init__(self) -> None:
        validate(self)
        if self.min_lr > self.lr:
            raise ValueError(f"--min_lr {self.min_lr} is above --lr {self.lr}: lower it")

    @property
    def val_path(self) -> str:
        return self.val_data_path or self.train_data_path
