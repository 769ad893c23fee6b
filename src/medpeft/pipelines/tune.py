"""Few-shot adaptation of a foundation model on K support volumes; the same loop for every method."""
from __future__ import annotations

from itertools import islice
from pathlib import Path

import torch

from medpeft.data.fewshot import read_manifest
from medpeft.data.layouts import read_dataset
from medpeft.data.msd import MSDDataset, check_dataset
from medpeft.data.ontology import ClassMapping, class_mapping
from medpeft.data.transforms import cached_dataset, case_dicts
from medpeft.io import write_yaml
from medpeft.methods import (
    ADAPT_AUGMENT,
    ADAPT_BF16,
    SCRATCH,
    adapt_steps,
    apply_method,
    background_offset,
    group_rates,
    param_groups,
)
from medpeft.methods.adapter_io import save_adapter
from medpeft.methods.novel_organs import (
    INITS,
    lower_background,
    prototype_rows,
    set_head_classes,
    task_classes,
)
from medpeft.models.backbones import build_backbone
from medpeft.models.weights import Foundation, load_foundation
from medpeft.progress import Reporter
from medpeft.train import distributed
from medpeft.train.loop import LoopConfig, batches, train_loop
from medpeft.train.losses import MarginalDiceCELoss


def load_support(foundation: Foundation, split: dict) -> tuple[MSDDataset, ClassMapping]:
    """The manifest's dataset, checked on its support volumes, and its map to the model's classes."""
    ds = read_dataset(split["dataset"], label_files=True)
    check_dataset(ds, ds.cases_named(split["support"]))
    return ds, class_mapping(ds.labels, foundation.classes)


def crop_dataset(foundation: Foundation, ds: MSDDataset, mapping: ClassMapping,
                 names: list[str], *, augment: str = "light"):
    """Cached volumes ``names`` of ``ds`` that yield random class-balanced training crops (of the
    foundation's adaptation crop, :meth:`Foundation.adaptation_preprocessing`)."""
    return cached_dataset(case_dicts(ds, mapping, names), foundation.adaptation_preprocessing(),
                          {ds.name: mapping}, train=True, augment=augment)


def novel_channels(classes: tuple[str, ...], known: tuple[str, ...], mapping: ClassMapping, *,
                   organs: tuple[str, ...], root: Path) -> list[int]:
    """The task's channels the foundation never learnt; fails if the support lacks a task organ.

    A partially labelled dataset is fine for the default task (marginal loss), not for a task
    that names its organs or adds one the foundation does not know.
    """
    novel = [c for c, o in enumerate(classes, 1) if o not in known]
    missing = [o for c, o in enumerate(classes, 1)
               if (organs or c in novel) and not mapping.channel_to_local[c]]
    if missing:
        raise ValueError(f"{root}: does not label {', '.join(missing)}, which the task segments")
    return novel


def adapt(foundation_dir: Path, manifest: Path, method: str, out_dir: Path, *,
          options: dict | None = None, steps: int | None = None,
          lr: float | dict[str, float] | None = None, seed: int = 0, resume: bool = False,
          organs: tuple[str, ...] = (), head_init: str = "random", patience: int = 0,
          progress: Reporter | None = None, bf16: bool = ADAPT_BF16, grad_checkpoint: bool = False,
          augment: str = ADAPT_AUGMENT) -> dict:
    """Adapt with ``method`` on the manifest's support volumes; writes the adapter to ``out_dir``.

    ``steps``: default :func:`medpeft.methods.adapt_steps` for the support set's size.
    ``lr``: one rate for every parameter group, or ``{group: rate}`` over the defaults (which
    may grow with the support set's size, ``medpeft.methods.SHOT_SCALING``, and grow less or
    not at all on schedules under ``ADAPT_STEPS``: :func:`medpeft.methods.rate_growth`).
    ``organs``: the organs to segment (default: the foundation's; one organ: a binary task; "all"
    stands for the foundation's); the head keeps the rows of organs it knows, and a novel organ's
    row starts as ``head_init`` says (random | prototype, :mod:`medpeft.methods.novel_organs`).
    ``patience``: stop early when the training loss's moving average is flat that many steps.
    ``bf16`` / ``grad_checkpoint``: see ``LoopConfig``; ``augment``: :mod:`medpeft.data.augment`.
    """
    if head_init not in INITS:
        raise ValueError(f"unknown head initialisation {head_init!r}: {' or '.join(INITS)}")
    split = read_manifest(manifest)
    foundation = load_foundation(foundation_dir)
    torch.manual_seed(seed)  # new head rows and adapters depend on the seed alone
    known = foundation.classes
    foundation = foundation.with_classes(task_classes(known, organs))
    set_head_classes(foundation.model, known, foundation.classes)
    ds, mapping = load_support(foundation, split)
    shots = len(split["support"])
    steps = adapt_steps(method, shots) if steps is None else steps  # 0 is refused, not the default
    rates = group_rates(method, lr, shots=shots, steps=steps)
    loop = LoopConfig(steps=steps, lr=max(rates.values()), warmup=max(1, steps // 10),
                      seed=seed, checkpoint_every=max(10, steps // 4), patience=patience,
                      bf16=bf16, grad_checkpoint=grad_checkpoint)
    out_dir = Path(out_dir)
    if distributed.is_main():
        write_yaml(out_dir / "config.yaml", {
            "command": "adapt", "foundation": str(foundation_dir), "manifest": str(manifest),
            "method": method, "options": options or {}, "loop": loop.to_dict(), "lr": rates,
            "classes": list(foundation.classes), "head_init": head_init, "augment": augment,
            "ranks": distributed.world_size()})
    data = crop_dataset(foundation, ds, mapping, split["support"], augment=augment)
    novel = novel_channels(foundation.classes, known, mapping, organs=organs, root=ds.root)
    if novel and head_init == "prototype" and method != SCRATCH:
        crops = islice(batches(data, 1, seed + 7919), 4 * len(split["support"]))
        prototype_rows(foundation.model, crops, {c: mapping.channel_to_local[c] for c in novel})
    torch.manual_seed(seed)  # adapter initialisation depends on the seed alone, not on earlier runs
    if method == SCRATCH:  # the peer: the same network, none of the foundation's weights
        fresh = build_backbone(foundation.backbone, len(foundation.classes) + 1)
        foundation.model.load_state_dict(fresh.state_dict())
    state = apply_method(foundation.model, method, options)
    summary = train_loop(foundation.model, data, MarginalDiceCELoss(), loop, run_dir=out_dir,
                         groups=param_groups(foundation.model, state, rates), resume=resume,
                         progress=progress, desc=f"adapt {method} K={len(split['support'])}")
    if not distributed.is_main():  # every rank holds the same adapter; rank 0 saves it
        return summary
    # measured on the foundation's own organs: a binary or novel-organ task keeps none
    offset = background_offset(method, shots) if foundation.classes == known else 0.0
    lower_background(foundation.model, offset)
    save_adapter(out_dir, foundation.model, state, foundation,
                 extra={"manifest": split, "train": summary, "background_offset": offset})
    return summary
