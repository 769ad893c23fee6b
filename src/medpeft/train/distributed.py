"""Multi-process training on torch.distributed: one process per GPU (or CPU worker), torchrun-style.

``medpeft pretrain`` / ``medpeft adapt`` started by ``torchrun --nproc-per-node N`` (or with the
usual rendezvous flags across nodes) find ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` in their
environment; ``setup`` then joins the process group: NCCL when the ranks run on CUDA GPUs, gloo
on CPUs. Without those variables everything here is a no-op and a run is a single process.
Rank 0 alone writes checkpoints, logs and artefacts (``is_main``); metrics are averaged over the
ranks (``mean_over_ranks``), so every rank takes the same early-stopping decision.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

from medpeft.device import resolve_device


def launched() -> bool:
    """Whether this process was started as one rank of several (torchrun's variables)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or a single process); after the group is gone, torchrun's ``RANK`` decides."""
    return (rank() if active() else int(os.environ.get("RANK", "0"))) == 0


def rank_device(spec: str | torch.device | None = None) -> torch.device:
    """This rank's device: its own GPU (``LOCAL_RANK``) when the choice is CUDA, else the CPU."""
    device = resolve_device(spec)
    if device.type == "cuda" and device.index is None and launched():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def setup(device: str | torch.device | None = None, timeout_s: float = 600.0) -> bool:
    """Join the process group when launched as several ranks; returns whether it did."""
    if not launched() or active():
        return active()
    where = rank_device(device)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    dist.init_process_group(backend_for(where), timeout=timedelta(seconds=timeout_s))
    return True


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def teardown() -> None:
    if active():
        dist.destroy_process_group()


@contextmanager
def process_group(device: str | torch.device | None = None):
    """``setup`` on entry and ``teardown`` on exit (a no-op for a single process)."""
    joined = setup(device)
    try:
        yield
    finally:
        if joined:
            teardown()


def barrier() -> None:
    if active():
        dist.barrier()


def mean_over_ranks(value: float, device: torch.device | None = None) -> float:
    """The mean of ``value`` over every rank (the value itself for a single process)."""
    if not active():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64,
                     device=device if device is not None and device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when several ranks train (gradients averaged over
    ranks; rank 0's weights broadcast at the start), else ``model`` itself."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
