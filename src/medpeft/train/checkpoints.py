"""Training checkpoints and snapshots on disk: whole folders (trainable tensors, optimizer tensors,
step, RNG and training seconds) committed by rewriting ``latest.json`` last, so that a crash
mid-write never yields a loadable half-checkpoint (``medpeft.train.loop`` resumes from them)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from medpeft.io import write_json
from medpeft.models.weights import save_state


def save_checkpoint(folder: Path, step: int, model, optimizer, *, scheduler, seconds: float) -> None:
    """Everything to continue at ``step``, and the training seconds spent on steps 1..``step``."""
    name = f"ckpt-{step:07d}"
    target = folder / name
    shutil.rmtree(target, ignore_errors=True)
    save_state(target / "trainable.safetensors", trainable_parameters(model))
    opt_tensors, opt_meta = {}, {}
    for idx, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                opt_tensors[f"{idx}.{key}"] = value
            else:
                opt_meta[f"{idx}.{key}"] = value
    opt_tensors["__torch_rng__"] = torch.get_rng_state()
    save_state(target / "optimizer.safetensors", opt_tensors)
    write_json(target / "state.json", {"step": step, "seconds": seconds,
                                       "scheduler": scheduler.state_dict(),
                                       "optimizer_scalars": opt_meta,
                                       "param_groups": optimizer.state_dict()["param_groups"]})
    write_json(folder / "latest.json", {"step": step, "dir": name})  # the commit point
    for old in folder.glob("ckpt-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def save_snapshot(run_dir: Path, step: int, model) -> None:
    """The trainable weights at ``step``, kept after the run (``benchmarks/pretrain_milestones.py``
    scores them)."""
    save_state(run_dir / "snapshots" / f"step-{step:07d}" / "trainable.safetensors",
               trainable_parameters(model))


def trainable_parameters(model) -> dict:
    """The parameters the run trains, by name: what a checkpoint and a snapshot hold."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def load_checkpoint(folder: Path, model, optimizer=None, scheduler=None) -> int:
    """Restore the newest complete checkpoint under ``folder``; returns its step (0 if none)."""
    latest = folder / "latest.json"
    if not latest.is_file():
        return 0
    info = json.loads(latest.read_text())
    target = folder / info["dir"]
    params = dict(model.named_parameters())
    for name, value in load_file(str(target / "trainable.safetensors")).items():
        if name not in params:
            raise ValueError(f"{target}: checkpoint tensor {name!r} is not in the model")
        params[name].data.copy_(value)
    if optimizer is not None:
        state = json.loads((target / "state.json").read_text())
        tensors = load_file(str(target / "optimizer.safetensors"))
        torch.set_rng_state(tensors.pop("__torch_rng__"))
        opt_state: dict = {}
        for key, value in list(tensors.items()) + list(state["optimizer_scalars"].items()):
            idx, field = key.split(".", 1)
            opt_state.setdefault(int(idx), {})[field] = value
        optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
    return int(info["step"])


def checkpoint_seconds(folder: Path) -> float:
    """The training seconds the newest complete checkpoint under ``folder`` holds (every process
    that trained its steps; 0 if none, or from a release that did not keep them): a resumed run
    reports the time its finished steps took, not only its last process's."""
    latest = folder / "latest.json"
    if not latest.is_file():
        return 0.0
    state = json.loads((folder / json.loads(latest.read_text())["dir"] / "state.json").read_text())
    return float(state.get("seconds", 0.0))
