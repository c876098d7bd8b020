"""What a ``gpt2_ft.py`` run adds to ``resume.pt`` (:mod:`nola.train.resume`): the flags its data
position depends on, checked against the interrupted run, its adapter settings taken over, and the base
it resumes on."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from nola.config import AdapterRequest, ModelSource, NOLAConfig, TrainConfig, identity_fields
from nola.errors import fail
from nola.gpt2.build import resolve_adapter
from nola.gpt2.checkpoint import adapter_config_from
from nola.integrity import check_schema, check_tensors
from nola.log import get_logger
from nola.train.resume import RESUME_FIX, resume_path

log = get_logger(__name__)

# Flags the data position and schedule depend on: they must match the interrupted run.
RUN_KEYS = ("train_batch_size", "grad_acc", "random_seed", "seq_len", "obj")
_POSITION = {"epoch": int, "batch": int, "best_ppl": (int, float, type(None))}  # gpt2_ft.py's data position


def run_record(cfg: TrainConfig, random_seed: int, world_size: int) -> dict:
    """The flags the data position and schedule depend on, as stored in ``resume.pt``."""
    return {**{k: getattr(cfg, k) for k in RUN_KEYS if k != "random_seed"}, "random_seed": random_seed,
            "world_size": world_size}


def adopt_resume(state: dict, cfg: TrainConfig, random_seed: int, request: AdapterRequest) -> AdapterRequest:
    """Check the configs against the interrupted run, then take its adapter settings.

    Adapter flags that contradict the recorded adapter, and data/schedule flags that would move
    the data position, are errors; adapter settings left out are filled from the record."""
    source = resume_path(cfg.resume)
    check_schema(state, _POSITION, source, RESUME_FIX)
    for rank, grad in enumerate(state.get("grad", [])):  # a save inside an update (see nola.train.resume)
        check_schema({"grad": grad}, {"grad": dict}, source, RESUME_FIX)
        check_tensors(grad, source, f"grad of rank {rank}", RESUME_FIX)
    check_schema(state["run"], {key: object for key in (*RUN_KEYS, "world_size")}, f"{source} ('run')", RESUME_FIX)
    now = run_record(cfg, random_seed, state["run"]["world_size"])
    for key in RUN_KEYS:
        if now[key] != state["run"][key]:
            fail(f"--{key} {now[key]} differs from the interrupted run's {state['run'][key]}: resume with the same value")
    recorded = adapter_config_from(state)
    if recorded is None:
        if request.wants_nola or request.wants_lora:
            fail("--resume: the interrupted run trained the full model, without an adapter: drop the adapter flags")
        return request
    resolved = resolve_adapter(request, "materialised", recorded)
    if isinstance(recorded, NOLAConfig):
        values = {k: getattr(resolved, k) for k in identity_fields(NOLAConfig)}
        return AdapterRequest(nola={**request.nola, **values})
    return AdapterRequest(lora={**request.lora, **{k: getattr(resolved, k) for k in ("dim", "alpha", "dropout")}})


def resume_source(state: dict, source: ModelSource, where: str) -> ModelSource:
    """The base a resumed ``gpt2_ft.py`` run trains on: the interrupted run's.

    Without ``--init_checkpoint`` that is the base file ``resume.pt`` records (or ``--base_checkpoint``
    when it has moved), as an adapter checkpoint finds its base; its SHA-256 is checked against the
    record once the model is built (:func:`nola.gpt2.checkpoint.check_metadata`). A run that started from
    a random GPT-2 (no ``--init_checkpoint``) must resume without one. Building a random GPT-2 where
    the interrupted run had a base would train the adapter on the wrong weights, silently."""
    recorded = (state.get("base") or {}).get("path")
    given = source.init_checkpoint or source.base_checkpoint
    if recorded is None:
        if given:
            flag = "--init_checkpoint" if source.init_checkpoint else "--base_checkpoint"
            fail(f"{flag} {given}: the interrupted run in --resume {where} trained on a randomly initialised GPT-2 "
                 f"(no --init_checkpoint), so it must continue on one: drop {flag}")
        return source
    if source.init_checkpoint:
        return source
    path = source.base_checkpoint or recorded
    if not Path(path).is_file():
        fail(f"--resume {where}: the interrupted run's base checkpoint {path!r} is not there; pass "
             f"--base_checkpoint PATH (or --init_checkpoint PATH) to that GPT-2 file (its SHA-256 is checked)")
    log.info("--resume: training on the interrupted run's base %s (SHA-256 checked)", path)
    return dataclasses.replace(source, init_checkpoint=path, base_checkpoint=None)
