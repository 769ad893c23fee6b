"""SEA-PEFT on a CT foundation model: search the adapter topology, then refine it from scratch.

1. Search: every variant of the search space is inserted into the frozen foundation model; the
   search-audit-allocate loop trains, audits and re-selects the active sites under the budget.
   The audit scores fixed crops drawn from the K support volumes with their own random stream
   (the baselines get exactly these volumes); ``audit_volume`` instead audits on one extra
   labelled volume, and the report says so.
2. Refine: the chosen sites are inserted into a fresh copy of the foundation model and trained
   by the same ``adapt`` loop, the same number of steps and the same rates as every
   fixed-topology method; the adapter is saved like theirs (method ``sea-peft``).
"""
from __future__ import annotations

import json
import time
from itertools import islice
from pathlib import Path

import torch

from medpeft.data.fewshot import read_manifest
from medpeft.device import resolve_device, to_device
from medpeft.io import write_json
from medpeft.methods import ADAPT_AUGMENT, ADAPT_BF16, DEFAULT_LR, SEA
from medpeft.methods.peft import freeze, train_head
from medpeft.methods.sea.audit import SoftDiceScore
from medpeft.methods.sea.loop import SeaConfig, search
from medpeft.methods.sea.report import write_search_report
from medpeft.methods.sea.space import SWIN_SPACE, describe, insert_space
from medpeft.models.backbones import count_parameters
from medpeft.models.weights import load_foundation
from medpeft.pipelines.tune import adapt, crop_dataset, load_support
from medpeft.progress import Reporter
from medpeft.train.cpu_convolutions import onednn_convolutions, pays_on
from medpeft.train.loop import batch_loss, batches
from medpeft.train.losses import MarginalDiceCELoss


def _audit_names(ds, split: dict, audit_volume: str | None) -> list[str]:
    if audit_volume is None:
        return split["support"]
    if audit_volume in split["support"] or audit_volume in split["test"]:
        raise ValueError(f"--audit-volume {audit_volume}: it is a support or test volume; give an "
                         "extra labelled volume of the target site")
    return [ds.case(audit_volume).name]


def sea_adapt(foundation_dir: Path, manifest: Path, out_dir: Path, cfg: SeaConfig, *,
              steps: int | None = None, lr: float | dict[str, float] | None = None,
              audit_crops: int | None = None,
              audit_volume: str | None = None, resume: bool = False, bf16: bool = ADAPT_BF16,
              augment: str = ADAPT_AUGMENT, progress: Reporter | None = None) -> dict:
    """Search, then refine for ``steps`` steps at rates ``lr`` (both by default
    :func:`medpeft.pipelines.tune.adapt`'s for the support set's size); writes the adapter and
    ``report.md`` to ``out_dir``. ``bf16``: both stages' forward passes (the audits' too) under
    bf16 autocast where the device runs it natively; ``augment``: the refinement's."""
    out_dir = Path(out_dir)
    search_dir = out_dir / "search"
    outcome_path = search_dir / "outcome.json"
    split = read_manifest(manifest)
    if not (resume and outcome_path.exists()):
        outcome = _search(foundation_dir, split, search_dir, cfg, audit_crops=audit_crops,
                          audit_volume=audit_volume, bf16=bf16, progress=progress)
        write_json(outcome_path, outcome)
    outcome = json.loads(outcome_path.read_text())
    summary = adapt(foundation_dir, manifest, SEA, out_dir, options={"sites": outcome["sites"]},
                    steps=steps, lr=lr, seed=cfg.seed, resume=resume, progress=progress, bf16=bf16,
                    augment=augment)
    summary["refine_seconds"] = summary["seconds"]  # its training loop's, every process's
    summary.update(search_seconds=outcome["seconds"], audit_seconds=outcome["audit_seconds"])
    summary["seconds"] = outcome["seconds"] + summary["refine_seconds"]
    write_search_report(out_dir, outcome, summary)
    return summary


def training_loss(loss, *, bf16: bool):
    """``loss_of(model, batch)`` for the search: the training loop's own batch loss."""
    return lambda model, batch: batch_loss(model, batch, loss, bf16=bf16)


def _search(foundation_dir: Path, split: dict, run_dir: Path, cfg: SeaConfig,
            *, audit_crops: int | None, audit_volume: str | None, bf16: bool,
            progress: Reporter | None) -> dict:
    t_start = time.perf_counter()
    foundation = load_foundation(foundation_dir)
    ds, mapping = load_support(foundation, split)
    support = split["support"]
    train = crop_dataset(foundation, ds, mapping, support)
    audit_data = crop_dataset(foundation, ds, mapping, _audit_names(ds, split, audit_volume))
    n_crops = audit_crops or min(4, max(2, len(support)))
    device = resolve_device()
    crops = [to_device(c, device)  # own random stream
             for c in islice(batches(audit_data, 1, cfg.seed + 7919), n_crops)]
    model = foundation.model
    n_model = count_parameters(model)
    freeze(model)
    torch.manual_seed(cfg.seed)  # the candidates' initialisation depends on the seed alone
    sites = insert_space(model, SWIN_SPACE)
    train_head(model, {})
    model.to(device)
    head = list(model.out.parameters())
    rates = dict(DEFAULT_LR)  # every kind's rate and the head's
    stream = (to_device(b, device) for b in batches(train, 1, cfg.seed))
    with onednn_convolutions(model, enabled=pays_on(device, bf16=bf16)):  # as the loop does
        outcome = search(model, sites, stream, training_loss(MarginalDiceCELoss(), bf16=bf16),
                         score=[SoftDiceScore([c], bf16=bf16) for c in crops], cfg=cfg,
                         run_dir=run_dir, rates=rates, fixed=head,
                         budget=cfg.budget_params(n_model), progress=progress)
    return {"sites": [describe(s) | {"n_params": s.n_params} for s in outcome.chosen],
            "budget": outcome.budget, "used": outcome.used, "model_parameters": n_model,
            "candidates": len(sites), "candidate_parameters": sum(s.n_params for s in sites),
            "head_parameters": sum(p.numel() for p in head),
            "audit_seconds": outcome.audit_seconds, "loop_seconds": outcome.seconds,
            "seconds": time.perf_counter() - t_start, "audit_crops": n_crops,
            "audit_source": f"extra labelled volume {audit_volume}" if audit_volume else
            f"{n_crops} crops of the {len(support)} support volumes (no extra labels)",
            "config": cfg.to_dict(), "manifest": split, "device": str(device), "bf16": bf16}
