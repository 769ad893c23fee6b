"""Federated SEA-PEFT, the hospital's side: train the active adapters, audit every candidate locally.

Every hospital and the server insert the same SEA-PEFT search space into the frozen foundation (same
seed, same order), all candidates switched off. The tensors a message carries *are* the active
set: the head plus the candidates whose tensors are present, named ``<site name>.<parameter>``
(e.g. ``swinViT...attn.qkv:lora[r4].lora_A``), so names do not depend on which other candidates
are inserted. A candidate the server switches off is reset to its initial values, so an inactive
candidate is always fresh here.

After local training the hospital audits on one crop of its own support volumes: toggle-off utility
for (up to ``audit_sites``, in rotation) active candidates, the first-order estimate for the
inactive ones (see ``methods.sea.audit``). It smooths them with its own EMA + IQR smoother, kept
between rounds in the node's state; a candidate whose state changed starts a fresh track, since
its old measurements describe weights it no longer has. The reply carries the smoothed utility
of every candidate, in candidate order.
"""
from __future__ import annotations

import math
import tempfile
from itertools import islice
from pathlib import Path

import torch

from medpeft.adapters.base import AdapterSite
from medpeft.device import resolve_device, to_device
from medpeft.federated.hospital import Hospital
from medpeft.methods import DEFAULT_LR
from medpeft.methods.peft import freeze, train_head
from medpeft.methods.sea.audit import SoftDiceScore, first_order, measure, toggle_off
from medpeft.methods.sea.loop import SeaConfig
from medpeft.methods.sea.smoothing import UtilitySmoother
from medpeft.methods.sea.space import SWIN_SPACE, insert_space
from medpeft.models.backbones import count_parameters
from medpeft.models.weights import Foundation, load_foundation
from medpeft.pipelines.tune import crop_dataset, load_support
from medpeft.train.loop import LoopConfig, batches, train_loop
from medpeft.train.losses import MarginalDiceCELoss


def candidate_model(seed: int, foundation_dir: str) -> tuple[Foundation, list[AdapterSite], int]:
    """The frozen foundation with every candidate inserted and off, the head trainable; returns
    (foundation, candidates, the base model's parameter count)."""
    foundation = load_foundation(foundation_dir)
    model = foundation.model
    n_model = count_parameters(model)
    freeze(model)
    torch.manual_seed(seed)
    candidates = insert_space(model, SWIN_SPACE)
    for candidate in candidates:
        candidate.enabled = False
    train_head(model, {})
    return foundation, candidates, n_model


def own_parameters(candidate: AdapterSite) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in candidate.named_parameters() if not n.startswith("base.")}


def wire_state(model: torch.nn.Module, candidates: list[AdapterSite], names=None) -> dict:
    """Head tensors and the tensors of candidates ``names`` (default: the enabled ones)."""
    chosen = [s for s in candidates if (s.enabled if names is None else s.name in names)]
    state = {f"out.{n}": p.detach().clone() for n, p in model.out.named_parameters()}
    for candidate in chosen:
        state.update({f"{candidate.name}.{n}": p.detach().clone()
                      for n, p in own_parameters(candidate).items()})
    return state


def load_wire(model: torch.nn.Module, candidates: list[AdapterSite], tensors: dict) -> list[AdapterSite]:
    """Load a message's tensors; the candidates it carries are switched on (and trainable), the
    others off. Returns the active candidates. Unknown names or shapes fail by name."""
    targets = {f"out.{n}": p for n, p in model.out.named_parameters()}
    by_name = {s.name: s for s in candidates}
    active = []
    for candidate in candidates:
        params = own_parameters(candidate)
        present = [f"{candidate.name}.{n}" in tensors for n in params]
        candidate.enabled = all(present)
        if any(present) and not candidate.enabled:
            raise ValueError(f"candidate {candidate.name}: the message carries only part of its tensors")
        for p in params.values():
            p.requires_grad_(candidate.enabled)
        if candidate.enabled:
            active.append(candidate)
            targets.update({f"{candidate.name}.{n}": p for n, p in params.items()})
    for name, value in tensors.items():
        if name not in targets:
            owner = name.rsplit(".", 1)[0]
            what = "candidate" if owner in by_name else "tensor"
            raise ValueError(f"{what} {name!r} is not in the SEA-PEFT search space")
        if tuple(value.shape) != tuple(targets[name].shape):
            raise ValueError(f"{name} has shape {tuple(value.shape)}, expected "
                             f"{tuple(targets[name].shape)}")
        targets[name].data.copy_(value)
    return active


def _groups(model: torch.nn.Module, active: list[AdapterSite]) -> list[dict]:
    groups: dict[str, list] = {}
    for candidate in active:
        groups.setdefault(candidate.kind, []).extend(own_parameters(candidate).values())
    groups["head"] = list(model.out.parameters())
    return [{"name": k, "params": v, "lr": DEFAULT_LR[k]} for k, v in groups.items()]


def sea_train(hospital: Hospital, tensors: dict, memory: dict, server_round: int, *, sea: SeaConfig,
              steps: int | None = None) -> tuple[dict, list[float], dict, dict]:
    """One round at one hospital: train the active set, audit every candidate, smooth.

    ``memory`` is what the hospital kept from its last round (``{}`` at first). Returns (trained
    tensors, smoothed utility of every candidate in order, new memory, metrics).
    """
    cfg = hospital.cfg
    steps = steps or cfg.local_steps
    foundation, candidates, _ = candidate_model(cfg.seed, cfg.foundation)
    model = foundation.model
    active = load_wire(model, candidates, tensors)
    ds, mapping = load_support(foundation, hospital.split)
    data = crop_dataset(foundation, ds, mapping, hospital.split["support"])
    loop = LoopConfig(steps=steps, warmup=max(1, steps // 10), log_every=steps,
                      checkpoint_every=10 ** 9, seed=cfg.seed + 1000 * server_round,
                      bf16=cfg.bf16)
    with tempfile.TemporaryDirectory() as tmp:
        summary = train_loop(model, data, MarginalDiceCELoss(), loop, run_dir=Path(tmp),
                             groups=_groups(model, active))
    device = resolve_device()
    crop = to_device(next(islice(batches(data, 1, cfg.seed + 7919 + server_round), 1)), device)
    score = SoftDiceScore([crop], bf16=cfg.bf16)
    smoother = UtilitySmoother(sea.decay, sea.window, sea.lam).load_dict(memory.get("tracks", {}))
    was_active = set(memory.get("active", []))
    for s in candidates:
        if (s.name in was_active) != s.enabled:
            smoother.forget(s.name)
    model.eval()
    base = measure(model, score)
    utilities = toggle_off(model, score, audit_order(active, smoother, server_round,
                                                     sea.audit_sites), base)
    fresh = [s for s in candidates if not s.enabled]
    for s in fresh:
        for p in own_parameters(s).values():
            p.requires_grad_(True)
    horizon = {s.kind: DEFAULT_LR[s.kind] * steps for s in fresh}
    utilities.update(first_order(model, score, fresh, horizon))
    for name, u in utilities.items():
        smoother.update(name, u)
    smoothed = [smoother.score(s.name) for s in candidates]
    memory = {"tracks": smoother.to_dict(), "active": [s.name for s in active]}
    metrics = {"train-loss": float(summary.get("loss", math.nan)),
               "seconds": float(summary["seconds"]), "audit-dice": base}
    return (wire_state(model, candidates),
            [math.nan if v is None else float(v) for v in smoothed], memory, metrics)


def audit_order(active: list[AdapterSite], smoother: UtilitySmoother, server_round: int,
                n: int) -> list[AdapterSite]:
    """The ``n`` active candidates to audit: those not yet measured in their state first, then
    the others in a rotation that moves every round."""
    new = [s for s in active if smoother.score(s.name) is None]
    known = [s for s in active if smoother.score(s.name) is not None]
    start = (server_round * n) % max(1, len(known))
    return (new + known[start:] + known[:start])[:n]


def sea_evaluate(hospital: Hospital, tensors: dict) -> float:
    """Mean Dice at the hospital's test volumes with the message's active set."""
    foundation, candidates, _ = candidate_model(hospital.cfg.seed, hospital.cfg.foundation)
    load_wire(foundation.model, candidates, tensors)
    return hospital.dice(foundation)
