"""Launcher-agnostic process set-up: torch.distributed.launch, torchrun, or plain python."""
from __future__ import annotations

import datetime
import logging
import os
import random
import sys
from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from nola.config import LaunchConfig
from nola.errors import UsageError, fail
from nola.log import get_logger, set_rank

log = get_logger(__name__)
T = TypeVar("T")
_joined = False  # whether this process joined a process group (init_distributed): it ends through leave()


@dataclass
class DistContext:
    """Where this process sits in the job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def initialized(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def init_distributed(args: LaunchConfig) -> DistContext:
    """Read rank/world size from the launcher, pick the device and backend, set threads and seeds."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", args.local_rank if args.local_rank is not None else 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    want_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        fail("--device cuda but no CUDA device is visible: use --device cpu")
    if want_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        _set_cpu_threads(args.threads, local_world)
    if world > 1 and not dist.is_initialized():
        # Every collective (and the rendezvous) gives up after --dist_timeout: one stuck rank stops the job.
        dist.init_process_group("nccl" if want_cuda else "gloo", init_method="env://",
                                timeout=datetime.timedelta(seconds=args.dist_timeout))
        global _joined
        _joined = True
    set_rank(rank)
    seed_everything(args.random_seed + rank)
    return DistContext(rank=rank, local_rank=local_rank, world_size=world, device=device)


def _set_cpu_threads(threads: int | None, local_world: int) -> None:
    """Explicit --threads wins; else undo the launcher's OMP_NUM_THREADS=1 by sharing the cores."""
    if threads is None and os.environ.get("OMP_NUM_THREADS") == "1" and "LOCAL_RANK" in os.environ:
        threads = max(1, (os.cpu_count() or 1) // max(1, local_world))
    if threads is not None:
        torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def leave(status: int) -> None:
    """End a process that joined a process group with exit ``status``, skipping interpreter teardown;
    return at once in any other process.

    ``destroy_process_group`` does not stop Gloo's threads (two ``pt_gloo_runloop`` and the
    ``gloo_tcp_loop``) once DistributedDataParallel has wrapped a model: DDP keeps the process group
    alive, so a finished run entered interpreter teardown with them running. A C++ thread that must
    take the GIL then (a worker dropping the last reference to a collective's tensors, late on a
    loaded machine) is ended by ``pthread_exit``, and that unwinding through a ``noexcept``
    destructor calls ``std::terminate``: "terminate called without an active exception", SIGABRT,
    and the launcher reports a finished run as failed. Every output is complete and closed here
    (collectives done, files written atomically), so the process closes the group, flushes its
    streams and exits without the teardown."""
    if not _joined:
        return
    cleanup()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_ranks_sum(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the ranks (a new tensor; ``value`` itself without a process group)."""
    if not dist.is_initialized():
        return value
    total = value.clone()
    dist.all_reduce(total)
    return total


def rank_share(loss_sum: torch.Tensor, total: torch.Tensor | float, world_size: int) -> torch.Tensor:
    """What each of ``world_size`` DDP ranks backpropagates so that DDP's gradient average is the
    gradient of (Σ over ranks of ``loss_sum``) / ``total``: ``loss_sum · world_size / total``.

    ``total`` is the denominator of the whole job's batch (e.g. its token count summed over the
    ranks). The mean over the ranks of the result is that batch's loss, and with one process the
    result is ``loss_sum / total`` to the bit (× 1 is exact).
    """
    return loss_sum * world_size / total


def gather_objects(obj: object, ctx: DistContext) -> list[object]:
    """Every rank's ``obj`` on every rank (a one-element list without a process group)."""
    if not dist.is_initialized():
        return [obj]
    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def main_decides(decide: Callable[[], T], ctx: DistContext) -> T | None:
    """Run ``decide`` on rank 0 only; a :class:`UsageError` it raises is raised on every rank, so all
    processes stop with the same one-line error. Returns ``decide``'s result on rank 0."""
    result, problem = None, None
    if ctx.is_main:
        try:
            result = decide()
        except UsageError as exc:
            problem = str(exc)
    if dist.is_initialized():
        shared = [problem]
        dist.broadcast_object_list(shared, src=0)
        problem = shared[0]
    if problem is not None:
        fail(problem)
    return result
