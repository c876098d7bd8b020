"""The one adapter format, for any model: a folder of ``adapter_config.json`` + ``adapter_model.safetensors``.

:func:`save_adapter` writes what :func:`nola.adapters.inject` (or :func:`nola.lora_inject.inject_lora`,
or the GPT-2 fork's built-in LoRA) put on a model: the adapter kind and its configuration (seeds
included), the target modules, the roles with their layer counts and shapes, the identity of the
base model, optionally the training step, a SHA-256 of the tensor file and ``content_sha256`` over
all of it (:mod:`nola.integrity`: the header, seeds included, and the tensors). The tensors are α/β
(or LoRA's A/B) in float32; with qNOLA the b-bit codes of :func:`nola.quant.pack_state` as one uint8
stream plus the float32 row scales. :func:`load_adapter` checks all of it — the wrong base, a
changed file, a missing or unexpected key are one-line errors, never warnings — and injects into a
bare base; :func:`read_adapter` checks the files and returns the header and tensors, for callers that
build the model themselves (the GPT-2 fork).

The base identity is pluggable, a dict whose ``kind`` says how the base is known
(:data:`IDENTITY_KEYS`): ``config`` (:func:`base_identity`: class + SHA-256 of the configuration, for
``transformers`` and other in-memory models; written without a ``kind``, as before kinds existed, so
these folders stay format version 1, byte for byte) or ``file`` (:func:`file_identity`: the base
weights file's path and SHA-256, for the GPT-2 fork's checkpoints; format version 2).
:func:`check_base` compares a recorded identity with the one of the base at hand.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from nola.config import adapter_from_dict, adapter_kind, identity_fields
from nola.errors import fail
from nola.fileio import atomic_open
from nola.integrity import CONTENT_KEY, check_digest, content_digest, read_file
from nola.adapters import adapter_state, inject, is_adapter_key, is_merged, set_merged
from nola.quant import pack_state, unpack_state

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT = "nola-hf-adapter"
FORMAT_VERSION = 2  # the newest this reader knows; 2: a base identity of another kind than ``config``
_HEADER_KEYS = ("format_version", "adapter", "config", "target_modules", "roles", "base_model", "tensors",
                "payload_sha256")
# Config entries that say how a model was loaded or is run, not what it computes (classifiers set
# ``problem_type`` on their first forward with labels; a 4-bit base's adapter also fits its 16-bit base).
_RUNTIME_KEYS = {"architectures", "transformers_version", "dtype", "torch_dtype", "use_cache",
                 "output_attentions", "output_hidden_states", "return_dict", "problem_type",
                 "quantization_config"}


# How each kind of base identity is compared: the fields that must be equal. Other fields (a path,
# a name, a model card) say where the base was and are reported, not compared.
IDENTITY_KEYS = {"config": ("class", "config_sha256"), "file": ("sha256",)}


def base_identity(model: nn.Module) -> dict:
    """The ``config`` identity (no ``kind`` entry, as version 1 wrote it): class, SHA-256 of the
    canonical JSON of the base configuration, and ``name_or_path``.

    The configuration is ``model.config.to_dict()`` without runtime entries (dtype, paths,
    versions); a model without a ``config`` is identified by its base tensors' names and shapes."""
    config = getattr(model, "config", None)
    if hasattr(config, "to_dict"):
        values = {k: v for k, v in config.to_dict().items() if not k.startswith("_") and k not in _RUNTIME_KEYS}
    else:
        values = {k: list(v.shape) for k, v in model.state_dict().items() if not is_adapter_key(k)}
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return {"class": type(model).__name__, "config_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
            "name_or_path": getattr(config, "name_or_path", None) or None}


def file_identity(path: str | os.PathLike | None, sha256: str | None, **details) -> dict:
    """The ``file`` identity: the base weights file's path and SHA-256 (both None for a base that was
    never a file, e.g. a randomly initialised one); ``details`` are recorded beside them."""
    return {"kind": "file", "path": None if path is None else str(path), "sha256": sha256, **details}


def check_base(recorded: dict, have: dict, source: str | os.PathLike, fix: str) -> None:
    """One error line unless ``have`` (the base at hand) is the base ``recorded`` in an adapter
    folder; ``fix`` says what to pass instead (the caller knows its flags)."""
    kind = _kind(recorded)
    if kind not in IDENTITY_KEYS:
        fail(f"{source}: base identity kind {kind!r} is unknown to this nola (known: {', '.join(IDENTITY_KEYS)}): "
             f"upgrade nola")
    if _kind(have) != kind:
        fail(f"{source}: the adapter identifies its base by {kind} ({_describe(recorded)}), the base at hand "
             f"by {_kind(have)} ({_describe(have)}): {fix}")
    if any(recorded.get(key) != have.get(key) for key in IDENTITY_KEYS[kind]):
        fail(f"{source}: saved for {_describe(recorded)}, not {_describe(have)}: {fix}")


def _kind(identity: dict) -> str:
    return identity.get("kind", "config")


def _describe(identity: dict) -> str:
    if _kind(identity) == "file":
        sha = identity.get("sha256")
        return f"the base file {identity.get('path')} (sha256 {sha[:12] if sha else 'unrecorded'})"
    return (f"a {identity.get('class')} with config sha256 {str(identity.get('config_sha256'))[:12]} "
            f"({identity.get('name_or_path') or 'no name'})")


def _roles(model: nn.Module) -> dict:
    groups = getattr(model, "nola", None)
    if not isinstance(groups, nn.ModuleDict):
        return {}
    return {role: {"layers": g.num_layers, "d_in": g.d_in, "d_out": g.d_out,
                   "seeds": {"A": list(g.seeds_a), "B": list(g.seeds_b)}} for role, g in groups.items()}


def save_adapter(model: nn.Module, directory: str | os.PathLike, base: dict | None = None,
                 step: int | None = None) -> Path:
    """Write ``model``'s adapter to ``directory`` (each file atomically); return the folder.

    ``base``: the base's identity (default :func:`base_identity`, the ``config`` kind); ``step``: the
    training step, recorded when given."""
    spec = getattr(model, "adapter_spec", None)
    if spec is None:
        fail(f"{type(model).__name__} carries no adapter to save: call nola.inject(model, cfg, targets) first")
    directory = Path(directory)
    state = {k: v.detach().float().cpu().contiguous() for k, v in adapter_state(model).items()}
    qbits = getattr(spec.config, "qbits", None)
    base = base if base is not None else base_identity(model)
    header = {"format": FORMAT, "format_version": 1 if _kind(base) == "config" else FORMAT_VERSION,
              "adapter": adapter_kind(spec.config), "config": spec.config.to_dict(),
              "target_modules": list(spec.target_modules), "roles": _roles(model), "base_model": base,
              **({} if step is None else {"step": step})}
    if qbits is None:
        tensors = state
        header["tensors"] = {name: list(t.shape) for name, t in state.items()}
    else:
        packed = pack_state(state, qbits)
        tensors = {"codes": packed["codes"], "scale": packed["scale"]}
        header["tensors"] = dict(zip(packed["names"], packed["shapes"]))
    payload = save_safetensors(tensors)
    header["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    header[CONTENT_KEY] = content_digest({"header": header, "tensors": tensors})
    with atomic_open(directory / WEIGHTS_FILE, "wb") as handle:
        handle.write(payload)
    with atomic_open(directory / CONFIG_FILE) as handle:
        handle.write(json.dumps(header, indent=1) + "\n")
    return directory


def folder_bytes(directory: str | os.PathLike) -> int:
    """Bytes on disk of an adapter folder's two files (what its size is quoted as)."""
    return sum((Path(directory) / name).stat().st_size for name in (CONFIG_FILE, WEIGHTS_FILE))


def _read_header(path: Path) -> dict:
    if not path.is_file():
        fail(f"{path} not found: pass the folder that nola's save_adapter wrote")
    try:
        header = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        fail(f"{path} is not valid JSON ({exc.__class__.__name__}): save the adapter again")
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        fail(f"{path} is not a NOLA adapter config (format {FORMAT!r}): pass a folder written by save_adapter")
    missing = [key for key in _HEADER_KEYS if key not in header]
    if missing:
        fail(f"{path} lacks {', '.join(missing)}: save the adapter again")
    if header["format_version"] > FORMAT_VERSION:
        fail(f"{path} has format version {header['format_version']}, newer than this nola "
             f"({FORMAT_VERSION}): upgrade nola")
    return header


def _read_tensors(path: Path, header: dict, source: Path) -> dict[str, torch.Tensor]:
    """The adapter tensors of the payload by state-dict name, dequantised with qNOLA."""
    if not path.is_file():
        fail(f"{path} not found: copy it together with {CONFIG_FILE}")
    payload = path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        fail(f"{path}: SHA-256 differs from the one in {source.name} (changed or from another save): "
             f"save the adapter again")
    tensors = read_file(path, "save the adapter again")
    content = {"header": {k: v for k, v in header.items() if k != CONTENT_KEY}, "tensors": tensors}
    check_digest(content, header.get(CONTENT_KEY), source.parent, "copy the folder again or save the adapter again")
    qbits = header["config"].get("qbits")
    if qbits is None:
        return tensors
    if set(tensors) != {"codes", "scale"}:
        fail(f"{path}: a qNOLA payload holds 'codes' and 'scale', found {sorted(tensors)}: save the adapter again")
    names, shapes = list(header["tensors"]), list(header["tensors"].values())
    try:
        return unpack_state({"names": names, "shapes": shapes, "bits": qbits, **tensors})
    except (ValueError, RuntimeError) as exc:
        fail(f"{path}: the packed codes do not fit the tensors listed in {source.name} ({exc}): save the adapter again")


def _check_spec(model: nn.Module, header: dict, source: Path) -> None:
    """An adapter already on ``model`` must be the one recorded (same kind, identity, targets)."""
    spec = model.adapter_spec
    kind = adapter_kind(spec.config)
    if kind != header["adapter"] or list(spec.target_modules) != header["target_modules"]:
        fail(f"{source}: the model carries a {kind} adapter on {list(spec.target_modules)}, the file a "
             f"{header['adapter']} adapter on {header['target_modules']}: load onto a bare base model")
    ours = spec.config.to_dict()
    for name in identity_fields(type(spec.config)):
        if ours[name] != header["config"].get(name):
            fail(f"{source}: config {name}={header['config'].get(name)!r} but the model's adapter has "
                 f"{ours[name]!r}: load onto a bare base model")
    if _roles(model) != header["roles"]:
        fail(f"{source}: the recorded roles (layers, shapes, seeds) differ from the model's adapter: "
             f"load onto the base model the adapter was trained on")


def read_adapter(directory: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """The checked header of the adapter folder ``directory`` and its tensors by state-dict name
    (qNOLA dequantised); the base identity is left to the caller (:func:`check_base`)."""
    directory = Path(directory)
    source = directory / CONFIG_FILE
    header = _read_header(source)
    return header, _read_tensors(directory / WEIGHTS_FILE, header, source)


def load_adapter(model: nn.Module, directory: str | os.PathLike, trainable: bool = False,
                 base: dict | None = None, fix: str = "load it onto the base model it was trained on") -> nn.Module:
    """Load the adapter folder ``directory`` into ``model``; return ``model``.

    For inference by default: the adapter tensors are frozen (so their mixed factors are kept
    between calls); ``trainable=True`` to go on training them.

    A bare base gets the recorded adapter injected first; a model that carries one must carry
    the same. The base must be the one the adapter was saved from: ``base`` is its identity
    (default :func:`base_identity`, class and config SHA-256), ``fix`` what the error says to do
    when it is not. The file's tensors must be exactly the model's adapter tensors with their shapes."""
    directory = Path(directory)
    source = directory / CONFIG_FILE
    header, tensors = read_adapter(directory)
    check_base(header["base_model"], base if base is not None else base_identity(model), source, fix)
    try:
        cfg = adapter_from_dict(header["adapter"], header["config"])
    except (TypeError, ValueError) as exc:
        fail(f"{source}: bad adapter config ({exc}): save the adapter again with this nola")
    if cfg is None:
        fail(f"{source}: adapter kind {header['adapter']!r} is neither 'nola' nor 'lora': save the adapter again")
    if getattr(model, "adapter_spec", None) is None:
        if header["adapter"] == "nola":
            inject(model, cfg, header["target_modules"])
        else:
            from nola.lora_inject import inject_lora  # loralib only for a LoRA adapter

            inject_lora(model, cfg, header["target_modules"])
    else:
        _check_spec(model, header, source)
    expected = adapter_state(model)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        fail(f"{source}: adapter keys differ from the model's (missing {missing[:3]}, unexpected "
             f"{unexpected[:3]}): load onto the base model and targets the adapter was saved with")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            fail(f"{source}: {name} has shape {tuple(tensor.shape)}, the model expects "
                 f"{tuple(expected[name].shape)}: load onto the base model the adapter was saved from")
    merged = is_merged(model)
    set_merged(model, False)
    live = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            live[name].copy_(tensor)
            live[name].requires_grad_(trainable)
    set_merged(model, merged)
    return model
