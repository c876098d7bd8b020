"""Command-line flags made from the config dataclasses of :mod:`nola.config`, and back.

Each field becomes one flag (its name, aliases, help, choices and type come from the field), so the
scripts define nothing themselves. Adapter flags default to ``None`` on the command line, so that
a value the user typed can be told from a default (:class:`nola.config.AdapterRequest`).
"""
from __future__ import annotations

import argparse
import json
import types
import typing
from dataclasses import MISSING, fields
from typing import TypeVar

from nola.config import (DEFAULT_QBITS, AdapterRequest, LaunchConfig, LoRAConfig, ModelSource, NOLAConfig,
                         flag_of, validate_values)
from nola.errors import fail

T = TypeVar("T")


def _base_type(hint) -> type:
    """``int | None`` -> int; ``tuple[int, ...]`` -> tuple."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def add_flags(parser: argparse.ArgumentParser, cls: type, title: str, *, track_given: bool = False,
              fields_only: tuple[str, ...] | None = None) -> argparse._ArgumentGroup:
    """One flag per field of ``cls`` in a group ``title``. With ``track_given`` every default is
    ``None`` (the config's own default applies when the flag is absent)."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if not f.metadata.get("cli", True) or (fields_only is not None and f.name not in fields_only):
            continue
        names = [f"--{flag_of(f)}"] + [f"--{a}" for a in f.metadata.get("aliases", ())]
        default = None if f.default is MISSING else f.default
        kind = _base_type(hints[f.name])
        spec: dict = {"dest": f.name, "help": _help(cls, f.metadata.get("help", ""))}
        if kind is not bool:
            spec["metavar"] = flag_of(f).upper()
        if kind is bool:
            spec.update(action="store_const", const=True, default=None if track_given else False)
        elif kind is tuple:
            item = typing.get_args(hints[f.name])[0]
            spec.update(action="append", type=item, default=None if track_given else list(default))
        else:
            spec.update(type=kind, default=None if track_given else default)
            if f.metadata.get("choices"):
                spec["choices"] = f.metadata["choices"]
            if f.default is MISSING and f.default_factory is MISSING:
                spec["required"] = True
        if default not in (None, False) and kind is not tuple:
            spec["help"] += f" (default {default})"
        group.add_argument(*names, **spec)
    return group


def _help(cls: type, text: str) -> str:
    """A field's help with the script's names filled in (:class:`nola.config.RunControl`)."""
    for token, name in (("{folder}", "FOLDER"), ("{outputs}", "OUTPUTS"), ("{step}", "STEP")):
        if token in text:
            text = text.replace(token, getattr(cls, name))
    return text


def given(cls: type, args: argparse.Namespace) -> dict:
    """Fields of ``cls`` whose flag the user set (``track_given`` groups)."""
    return {f.name: getattr(args, f.name) for f in fields(cls)
            if f.metadata.get("cli", True) and getattr(args, f.name, None) is not None}


def config_from(cls: type[T], args: argparse.Namespace, **overrides) -> T:
    """``cls`` built from the parsed flags (one-line error for a bad value)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    if "eos_ids" in values:
        values["eos_ids"] = tuple(values["eos_ids"])
    values.update(overrides)
    try:
        return cls(**values)
    except ValueError as exc:
        fail(str(exc))


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--model_card, --init_checkpoint, --base_checkpoint, --nola_mode and every NOLA / LoRA flag."""
    add_flags(parser, ModelSource, "model")
    add_adapter_flags(parser)


def add_adapter_flags(parser: argparse.ArgumentParser) -> None:
    """Every NOLA flag, --qnola, and every LoRA flag (read back with :func:`adapter_request`)."""
    nola = add_flags(parser, NOLAConfig, "NOLA", track_given=True)
    nola.add_argument("--qnola", action="store_true",
                        help=f"quantisation-aware training of the coefficients (--qbits, default {DEFAULT_QBITS})")
    add_flags(parser, LoRAConfig, "LoRA (microsoft/LoRA baseline, via loralib)", track_given=True)


def add_peft_flags(parser: argparse.ArgumentParser) -> None:
    """--peft_method / --peft_options: one of PEFT's own methods as a baseline (:mod:`nola.causal.peft_baselines`)."""
    group = parser.add_argument_group("PEFT baselines (VeRA, VB-LoRA, FourierFT, TinyLoRA from HF PEFT)")
    group.add_argument("--peft_method", default=None, help="vera, vblora, fourierft or tinylora: train PEFT's method "
                       "instead of NOLA / LoRA, on --target_modules")
    group.add_argument("--peft_options", default=None, help="the method's PEFT config options as key=value pairs, "
                       "comma-separated (e.g. 'r=128,d_initial=0.1')")


def adapter_request(args: argparse.Namespace) -> AdapterRequest:
    """The NOLA / LoRA settings the user gave; ``--qbits`` only with ``--qnola``."""
    nola = given(NOLAConfig, args)
    if args.qnola:
        nola.setdefault("qbits", DEFAULT_QBITS)
    elif "qbits" in nola:
        fail("--qbits needs --qnola (quantised NOLA); add --qnola or drop --qbits")
    lora = given(LoRAConfig, args)
    try:
        validate_values(NOLAConfig, nola)
        validate_values(LoRAConfig, lora)
    except ValueError as exc:
        fail(str(exc))
    method = getattr(args, "peft_method", None)
    if method is None and getattr(args, "peft_options", None):
        fail("--peft_options needs --peft_method (vera, vblora, fourierft or tinylora)")
    peft = {} if method is None else {"method": method, "options": parse_options(args.peft_options)}
    request = AdapterRequest(nola=nola, lora=lora, peft=peft)
    if request.conflict():
        fail(request.conflict())
    return request


def model_flags(args: argparse.Namespace) -> tuple[ModelSource, AdapterRequest]:
    return config_from(ModelSource, args), adapter_request(args)


def add_launch_flags(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, LaunchConfig, "launch")


def launch_config(args: argparse.Namespace) -> LaunchConfig:
    return config_from(LaunchConfig, args)


def parse_options(text: str | None) -> dict:
    """``'r=128,save_projection=false'`` -> ``{"r": 128, "save_projection": False}`` (JSON values, else text)."""
    options: dict = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            fail(f"--peft_options {text!r}: {item!r} is not key=value; write e.g. --peft_options 'r=128,d_initial=0.1'")
        try:
            options[key.strip()] = json.loads(raw.strip())
        except json.JSONDecodeError:
            options[key.strip()] = raw.strip()
    return options
