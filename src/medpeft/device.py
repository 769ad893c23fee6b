"""Where the networks run: ``auto`` (the default) picks a CUDA GPU when one is visible, else the CPU.

The choice comes from, in order: the ``device`` argument of a call, ``set_device`` (the CLI's
``--device``), the ``MEDPEFT_DEVICE`` environment variable, then ``auto``. Data stays on the CPU
until a batch is moved with ``to_device``; saved tensors are always CPU copies.
"""
from __future__ import annotations

import os

import torch

_chosen: str | None = None


def set_device(spec: str | None) -> None:
    """Make ``spec`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``...) the process-wide default."""
    if spec is not None:
        resolve_device(spec)  # fail now on a bad name, not in the middle of a run
    global _chosen
    _chosen = spec


def chosen_device() -> str | None:
    """The process-wide choice of ``set_device`` (None: none made), for a process this one starts
    (a spawned process does not inherit it)."""
    return _chosen


def resolve_device(spec: str | torch.device | None = None) -> torch.device:
    """The torch device for ``spec``; a clear error when CUDA is asked for but not available."""
    spec = spec or _chosen or os.environ.get("MEDPEFT_DEVICE") or "auto"
    if str(spec) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ValueError(f"unknown device {spec!r}: use auto, cpu or cuda[:N]") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} asked for, but PyTorch sees no CUDA GPU here")
    return device


def to_device(batch: dict, device: torch.device) -> dict:
    """``batch`` with every tensor moved to ``device`` (other entries unchanged)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def supports_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively on ``device`` (a bf16 CUDA GPU, a CPU with AVX512/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def precision(device: torch.device, bf16: bool) -> str:
    """What training on ``device`` computes in when ``bf16`` is asked for: bf16 only where native."""
    return "bf16" if bf16 and supports_bf16(device) else "float32"


def float32_notice(device: torch.device, bf16: bool) -> str | None:
    """A line for the user when bf16 was asked for but ``device`` trains in float32 instead: on
    a 2-core CPU without AVX512-bf16 a 64^3 step of the default method takes 1.5 s against about
    0.3 s with it (docs/results.md), so long runs should not surprise."""
    if not bf16 or precision(device, bf16) == "bf16":
        return None
    where = "this CPU (no AVX512-bf16 or AMX)" if device.type == "cpu" else f"{device}"
    return (f"bf16 does not run natively on {where}: training in float32, several times slower "
            "than on hardware that has it")


def mixed_precision(device: torch.device, enabled: bool = True) -> torch.autocast:
    """bf16 autocast on ``device`` where it runs natively; a disabled (no-op) autocast elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=enabled and supports_bf16(device))
