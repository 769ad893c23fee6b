"""Few-shot adaptation of a foundation model on K support volumes; the same loop for every method."""
from __future__ import annotations

import time
from pathlib import Path

from medpeft.adapters.io import save_adapter
from medpeft.data.fewshot import read_manifest
from medpeft.data.msd import check_dataset, load_msd
from medpeft.data.ontology import class_mapping
from medpeft.data.transforms import cached_dataset, case_dicts
from medpeft.io import write_yaml
from medpeft.methods import apply_method, group_rates, param_groups
from medpeft.models.weights import load_foundation
from medpeft.train.losses import MarginalDiceCELoss
from medpeft.train.loop import LoopConfig, train_loop


def adapt(foundation_dir: Path, manifest: Path, method: str, out_dir: Path,
          options: dict | None = None, steps: int = 80,
          lr: float | dict[str, float] | None = None, seed: int = 0, resume: bool = False,
          progress=None) -> dict:
    """Adapt with ``method`` on the manifest's support volumes; writes the adapter to ``out_dir``.

    ``lr``: one rate for every parameter group, or ``{group: rate}`` over the defaults.
    """
    split = read_manifest(manifest)
    foundation = load_foundation(foundation_dir)
    ds = load_msd(split["dataset"])
    support = [ds.case(n) for n in split["support"]]
    check_dataset(ds, support)
    mapping = class_mapping(ds.labels, foundation.classes)
    items = case_dicts(ds, mapping, split["support"])
    rates = group_rates(method, lr)
    loop = LoopConfig(steps=steps, lr=max(rates.values()), warmup=max(1, steps // 10),
                      seed=seed, checkpoint_every=max(10, steps // 4))
    out_dir = Path(out_dir)
    write_yaml(out_dir / "config.yaml", {
        "command": "adapt", "foundation": str(foundation_dir), "manifest": str(manifest),
        "method": method, "options": options or {}, "loop": loop.to_dict(), "lr": rates})
    data = cached_dataset(items, foundation.preprocessing, {ds.name: mapping}, train=True)
    state = apply_method(foundation.model, method, options)
    t0 = time.perf_counter()
    summary = train_loop(foundation.model, data, MarginalDiceCELoss(), loop, out_dir,
                         groups=param_groups(foundation.model, state, rates), resume=resume,
                         progress=progress, desc=f"adapt {method} K={len(support)}")
    summary["seconds"] = time.perf_counter() - t0
    save_adapter(out_dir, foundation.model, state, foundation,
                 extra={"manifest": split, "train": summary})
    return summary
