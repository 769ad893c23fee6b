"""Few-shot adaptation of a foundation model on K support volumes; the same loop for every method."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from medpeft.adapters.io import save_adapter
from medpeft.data.fewshot import read_manifest
from medpeft.data.layouts import read_dataset
from medpeft.data.msd import MSDDataset, check_dataset
from medpeft.data.ontology import ClassMapping, class_mapping
from medpeft.data.transforms import cached_dataset, case_dicts
from medpeft.io import write_yaml
from medpeft.methods import apply_method, group_rates, param_groups
from medpeft.models.weights import Foundation, load_foundation
from medpeft.train.losses import MarginalDiceCELoss
from medpeft.train.loop import LoopConfig, train_loop


def load_support(foundation: Foundation, split: dict) -> tuple[MSDDataset, ClassMapping]:
    """The manifest's dataset, checked on its support volumes, and its map to the model's classes."""
    ds = read_dataset(split["dataset"], label_files=True)
    check_dataset(ds, [ds.case(n) for n in split["support"]])
    return ds, class_mapping(ds.labels, foundation.classes)


def crop_dataset(foundation: Foundation, ds: MSDDataset, mapping: ClassMapping,
                 names: list[str]):
    """Cached volumes ``names`` of ``ds`` that yield random class-balanced training crops."""
    return cached_dataset(case_dicts(ds, mapping, names), foundation.preprocessing,
                          {ds.name: mapping}, train=True)


def adapt(foundation_dir: Path, manifest: Path, method: str, out_dir: Path,
          options: dict | None = None, steps: int = 80,
          lr: float | dict[str, float] | None = None, seed: int = 0, resume: bool = False,
          progress=None) -> dict:
    """Adapt with ``method`` on the manifest's support volumes; writes the adapter to ``out_dir``.

    ``lr``: one rate for every parameter group, or ``{group: rate}`` over the defaults.
    """
    split = read_manifest(manifest)
    foundation = load_foundation(foundation_dir)
    ds, mapping = load_support(foundation, split)
    rates = group_rates(method, lr)
    loop = LoopConfig(steps=steps, lr=max(rates.values()), warmup=max(1, steps // 10),
                      seed=seed, checkpoint_every=max(10, steps // 4))
    out_dir = Path(out_dir)
    write_yaml(out_dir / "config.yaml", {
        "command": "adapt", "foundation": str(foundation_dir), "manifest": str(manifest),
        "method": method, "options": options or {}, "loop": loop.to_dict(), "lr": rates})
    data = crop_dataset(foundation, ds, mapping, split["support"])
    torch.manual_seed(seed)  # adapter initialisation depends on the seed alone, not on earlier runs
    state = apply_method(foundation.model, method, options)
    t0 = time.perf_counter()
    summary = train_loop(foundation.model, data, MarginalDiceCELoss(), loop, out_dir,
                         groups=param_groups(foundation.model, state, rates), resume=resume,
                         progress=progress, desc=f"adapt {method} K={len(split['support'])}")
    summary["seconds"] = time.perf_counter() - t0
    save_adapter(out_dir, foundation.model, state, foundation,
                 extra={"manifest": split, "train": summary})
    return summary
