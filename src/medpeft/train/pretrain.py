"""Supervised pre-training of the foundation model on partially labelled source datasets."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from medpeft.data.augment import check_augmentation
from medpeft.data.balance import SAMPLINGS, organ_balanced_weights
from medpeft.data.layouts import read_dataset
from medpeft.data.msd import check_dataset
from medpeft.data.ontology import ORGANS, class_mapping, resolve
from medpeft.data.transforms import Preprocessing, cached_dataset, case_dicts
from medpeft.io import write_yaml
from medpeft.models.backbones import PRESETS, BackboneConfig, build_backbone
from medpeft.models.weights import META, load_foundation, save_foundation
from medpeft.progress import Reporter
from medpeft.train import distributed
from medpeft.train.loop import LoopConfig, train_loop
from medpeft.train.losses import MarginalDiceCELoss


def source_classes(label_maps: list[dict[int, str]]) -> tuple[str, ...]:
    """Canonical organs labelled by at least one source dataset, in ontology order."""
    seen = {organ for labels in label_maps for v, n in labels.items() if v for organ in resolve(n)}
    return tuple(o for o in ORGANS if o in seen)


def pretrain(sources: list[Path], out_dir: Path, backbone: str = "swin-fast",
             pp: Preprocessing | None = None, *, loop: LoopConfig = LoopConfig(steps=300, lr=2e-3),
             resume: bool = False, progress: Reporter | None = None, recipe: dict | None = None,
             cache_dir: str | Path | None = None, augment: str = "light",
             sampling: str = "uniform", init: str | Path | None = None,
             steady_organs: tuple[str, ...] = ()) -> Path:
    """Train a foundation model on ``sources`` (MSD folders) and save it to ``out_dir``. Under
    torchrun every rank trains on its shard (DDP); rank 0 writes. ``cache_dir``: keep the
    preprocessed volumes on disk there (reused by later runs) instead of in memory.
    ``augment``: the patch augmentation (:mod:`medpeft.data.augment`); ``sampling``: every
    volume equally often, or ``organ-balanced`` (:mod:`medpeft.data.balance`). ``init``: a
    foundation folder whose weights the run starts from (continued pre-training). ``pp``: the
    working grid and window; by default ``init``'s, or the 5 mm CPU preset for a new model.
    ``steady_organs``: organs the augmentation's random offsets never move."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose from {SAMPLINGS}")
    if backbone not in PRESETS:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {tuple(PRESETS)}")
    if resume and finished(out_dir, loop.steps):
        return Path(out_dir)
    datasets = [read_dataset(s, label_files=True) for s in sources]
    for ds in datasets:
        check_dataset(ds)
    classes = source_classes([ds.labels for ds in datasets])
    check_steady_organs(augment, tuple(steady_organs), classes)
    cfg = PRESETS[backbone]
    # before anything is written: a refused start leaves no run folder
    if init is None:
        model, pp = build_backbone(cfg, len(classes) + 1), pp or Preprocessing()
    else:
        model, pp = start_from(init, backbone=cfg, classes=classes, pp=pp)
    mappings = {ds.name: class_mapping(ds.labels, classes) for ds in datasets}
    items = [item for ds in datasets for item in case_dicts(ds, mappings[ds.name])]
    out_dir = Path(out_dir)
    if distributed.is_main():
        write_yaml(out_dir / "config.yaml", {
            "command": "pretrain", "sources": [str(s) for s in sources], "backbone": backbone,
            "classes": classes, "preprocessing": pp.to_dict(), "loop": loop.to_dict(),
            "augment": augment, "steady_organs": list(steady_organs), "sampling": sampling,
            "init": str(init) if init else None,
            "ranks": distributed.world_size()})
    data = cached_dataset(items, pp, mappings, train=True, cache_dir=cache_dir,
                          augment=augment, steady_organs=tuple(steady_organs))
    weights = organ_balanced_weights(items, mappings) if sampling == "organ-balanced" else None
    summary = train_loop(model, data, MarginalDiceCELoss(), loop, run_dir=out_dir, resume=resume,
                         progress=progress, desc="pre-training", weights=weights)
    if not distributed.is_main():  # every rank holds the same weights; rank 0 saves them
        return out_dir
    return save_foundation(out_dir, model, cfg, classes, pp=pp,
                           # each task named once, however many collections lend it
                           extra={"sources": list(dict.fromkeys(ds.name for ds in datasets)),
                                  "train": summary,
                                  "recipe": recipe or {}})


def check_steady_organs(augment: str, steady_organs: tuple[str, ...],
                        classes: tuple[str, ...]) -> None:
    """Refuse steady organs that the augmentation cannot hold or the sources do not label, before
    a run folder is written."""
    check_augmentation(augment, steady_organs)
    unknown = [o for o in steady_organs if o not in classes]
    if unknown:
        raise ValueError(f"steady organ(s) {', '.join(unknown)} not labelled in the sources "
                         f"(their organs: {', '.join(classes)})")


def finished(out_dir: str | Path, steps: int) -> bool:
    """Whether ``out_dir`` holds the finished foundation of ``steps`` steps (and no later run's
    checkpoint to resume beside it). One finished at other steps is refused: resuming would train
    it again from random weights, over its weights (a finished run keeps no checkpoint)."""
    path = Path(out_dir) / META
    if not path.is_file() or (Path(out_dir) / "checkpoints" / "latest.json").is_file():
        return False
    done = int(json.loads(path.read_text()).get("train", {}).get("steps", -1))
    if done != steps:
        raise ValueError(f"{out_dir} holds a foundation finished at {done} steps, not {steps}; "
                         f"--resume continues an unfinished run. To train it further, start a "
                         f"new run from it: --init {out_dir} --out NEW_FOLDER")
    return True


def start_from(init: str | Path, *, backbone: BackboneConfig, classes: tuple[str, ...],
               pp: Preprocessing | None) -> tuple[torch.nn.Module, Preprocessing]:
    """Foundation ``init``'s network to train further, and the preprocessing to train it with
    (``pp``, or the foundation's own). A different backbone, organ list or intensity window is
    refused by name: the weights would not mean the same thing. A different working grid
    (spacing, patch) is allowed: the convolutions and windowed attention apply at any grid, and
    continuing on a finer one is how a foundation is moved to it."""
    foundation = load_foundation(init)
    pp = pp or foundation.preprocessing
    for what, theirs, ours in (("backbone", foundation.backbone, backbone),
                               ("organs", tuple(foundation.classes), tuple(classes)),
                               ("intensity window", foundation.preprocessing.hu_window, pp.hu_window)):
        if theirs != ours:
            raise ValueError(f"{init}: the --init foundation's {what} ({theirs}) is not this "
                             f"run's ({ours})")
    return foundation.model, pp
