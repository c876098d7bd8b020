"""Resume state of an interrupted fine-tuning run, kept apart from the adapter files.

``work_dir/resume.pt`` holds what continuing needs and the adapter (``model.<step>/``) must not carry: the
trainable tensors at full precision (a quantised adapter stores only b-bit codes), the
optimiser, the gradient scaler, every rank's RNG states and the data position (epoch, batches of
that epoch already trained). A ``gpt2_ft.py`` step is one batch, so with ``--grad_acc`` a save can
fall inside an update: then every rank's gradient accumulated so far is kept too (``grad``), and
the resumed run finishes that update as the uninterrupted one does. :class:`nola.train.trainer.Trainer`
rewrites it atomically at every save, after the task's adapter files.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from nola.errors import fail
from nola.fileio import atomic_torch_save
from nola.integrity import check_schema, check_sealed, check_tensors, read_file, seal

RESUME_FORMAT = "nola-resume"
RESUME_FILE = "resume.pt"
RESUME_FIX = "restore it from a copy, or start afresh without --resume"
_SCHEMA = {"step": int, "trainable": dict, "optimizer": dict, "scaler": dict, "rng": list, "run": dict}



def rng_state(device: torch.device) -> dict:
    """This process's Python, NumPy, torch (and CUDA) RNG states, storable with ``weights_only``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def resume_path(where: str | os.PathLike) -> Path:
    """``--resume`` takes the interrupted run's work_dir or its resume.pt."""
    path = Path(where)
    return path / RESUME_FILE if path.is_dir() else path


def load_resume(where: str | os.PathLike) -> dict:
    """Read and check a resume file; one-line errors for a missing, truncated, damaged or foreign file."""
    path = resume_path(where)
    state = read_file(path, RESUME_FIX, missing=f"no {RESUME_FILE} at --resume {where}; every save of a "
                      f"gpt2_ft.py, llama_ft.py or vit_ft.py run writes one beside its outputs")
    if state.get("format") != RESUME_FORMAT:
        fail(f"--resume {path}: not a resume file written by gpt2_ft.py, llama_ft.py or vit_ft.py")
    check_sealed(state, path, RESUME_FIX)
    check_schema(state, _SCHEMA, path, RESUME_FIX)
    check_tensors(state["trainable"], path, "trainable", RESUME_FIX)
    if "adapter_config" in state:  # written before the shared metadata block: same facts, older key
        state["config"] = state.pop("adapter_config")
    return state


def save_resume(work_dir: str | os.PathLike, meta: dict, position: dict, model: torch.nn.Module,
                optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, rngs: list, run: dict) -> int:
    """Write ``work_dir/resume.pt`` atomically (the metadata block of :func:`nola.gpt2.checkpoint.metadata`,
    the data position, trainable tensors, optimiser, scaler, every rank's RNG); return its size."""
    state = {"format": RESUME_FORMAT, **meta, **position,
             "trainable": {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad},
             "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": rngs, "run": run}
    return atomic_torch_save(seal(state), Path(work_dir) / RESUME_FILE)


def restore_trainable(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                      state: dict) -> None:
    """Put the saved trainable tensors, optimiser and scaler state back."""
    saved = state["trainable"]
    live = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(saved) != set(live) or any(saved[n].shape != p.shape for n, p in live.items()):
        fail("--resume: the saved trainable tensors do not fit this model; use the interrupted run's flags")
    with torch.no_grad():
        for name, param in live.items():
            param.copy_(saved[name])
    try:
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        fail(f"--resume: the saved optimiser state does not fit this model ({type(exc).__name__}); "
             f"use the interrupted run's flags, or {RESUME_FIX}")


def pending_grad(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """This rank's gradient accumulated since the last update (CPU copies; trainables with one)."""
    return {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()
            if p.requires_grad and p.grad is not None}


def restore_grad(model: torch.nn.Module, saved: dict[str, torch.Tensor], device: torch.device) -> None:
    """Put back what :func:`pending_grad` saved, before the first backward of the resumed run."""
    live = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not set(saved) <= set(live) or any(saved[n].shape != live[n].shape for n in saved):
        fail(f"--resume: the saved gradients do not fit this model; use the interrupted run's flags, or {RESUME_FIX}")
    for name, grad in saved.items():
        live[name].grad = grad.to(device)


def check_resume_world(state: dict, world_size: int) -> None:
    if len(state["rng"]) != state["run"]["world_size"]:
        fail(f"--resume: {RESUME_FILE} holds {len(state['rng'])} RNG states for {state['run']['world_size']} "
             f"processes; {RESUME_FIX}")
    if len(state.get("grad", state["rng"])) != len(state["rng"]):
        fail(f"--resume: {RESUME_FILE} holds the gradients of {len(state['grad'])} processes for "
             f"{len(state['rng'])}; {RESUME_FIX}")
    if world_size != state["run"]["world_size"]:
        fail(f"--resume: the interrupted run used {state['run']['world_size']} processes, this one "
             f"{world_size}; launch the same number so the data shards line up")

