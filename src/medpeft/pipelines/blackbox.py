"""Black-box adaptation: cache the support crops' features once, train a head on them, save it.

The foundation folder is read for its description only (organ classes, preprocessing); its
weights are touched by nobody but the :class:`FeatureService`, which the caller may supply (a
TorchScript / ONNX file or any call that returns features). ``organs`` chooses the organs to
segment (as :func:`medpeft.methods.novel_organs.task_classes`: one organ is a binary task, "all"
the foundation's, and organs the foundation never saw may be among them).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import replace
from pathlib import Path

import torch

from medpeft.data.fewshot import read_manifest
from medpeft.device import precision
from medpeft.infer.transductive import SizePenalty, size_prior
from medpeft.io import write_json
from medpeft.methods.blackbox.cache import build_cache
from medpeft.methods.blackbox.heads import BlackBoxHead, prototype_init
from medpeft.methods.blackbox.predictor import CONFIG, WEIGHTS, volume_features
from medpeft.methods.blackbox.service import FeatureService, foundation_service
from medpeft.methods.novel_organs import task_classes
from medpeft.models.weights import describe_foundation, load_foundation, save_state
from medpeft.pipelines.tune import crop_dataset, load_support
from medpeft.progress import Reporter
from medpeft.train.loop import LoopConfig, train_loop
from medpeft.train.losses import MarginalDiceCELoss

RATES = {"adapter": 3e-3, "head": 1e-2}


def _transductive_loss(head: BlackBoxHead, service: FeatureService, info, ds, *, mapping, split,
                       unlabelled: list[Path], gamma: float, weight: float, progress: Reporter | None):
    """Segmentation loss plus the size penalty on one unlabelled volume per step (in turn)."""
    prior = size_prior([ds.case(n).label for n in split["support"]], mapping.value_to_local)
    voxel_ml = float(torch.tensor(info.preprocessing.spacing).prod()) / 1000.0
    penalty = SizePenalty(prior, gamma, voxel_ml, torch.as_tensor(mapping.channel_to_local))
    task = progress.add_task("features of unlabelled volumes", total=len(unlabelled)) \
        if progress else None
    volumes = []
    for path in unlabelled:
        volumes.append(volume_features(service, path, info.preprocessing))
        if progress:
            progress.advance(task)
    seg, turn = MarginalDiceCELoss(), itertools.count()

    def loss(logits, label, c2l):
        feats = volumes[next(turn) % len(volumes)].to(logits.device).float()
        return seg(logits, label, c2l) + weight * penalty(head(feats))

    def report() -> dict:
        with torch.no_grad():
            sizes = [{c: float(v) for c, v in penalty.volumes(head(f.float())).items()}
                     for f in volumes]
        return {"prior_ml": {mapping.local_names[c]: s for c, s in prior.items()}, "gamma": gamma,
                "predicted_ml": [{mapping.local_names[c]: v for c, v in s.items()} for s in sizes]}
    return loss, report


def _groups(head: BlackBoxHead) -> list[dict]:
    groups = [{"name": "head", "params": list(head.head.parameters()), "lr": RATES["head"]}]
    if head.adapter is not None:
        groups.append({"name": "adapter", "params": list(head.adapter.parameters()),
                       "lr": RATES["adapter"]})
    return groups


def blackbox_adapt(foundation_dir: Path, manifest: Path, out_dir: Path, *, kind: str = "spatial",
                   init: str = "prototype", organs: tuple[str, ...] = (), steps: int = 150,
                   seed: int = 0, crops_per_volume: int = 8, service: FeatureService | None = None,
                   unlabelled: list[Path] = (), gamma: float = 0.2, size_weight: float = 1.0,
                   patience: int = 0, resume: bool = False,
                   progress: Reporter | None = None) -> dict:
    """Train a black-box adapter on the manifest's support volumes; writes it to ``out_dir``.

    ``unlabelled``: scans of the new site to adapt on transductively (the size prior of
    :mod:`medpeft.infer.transductive` with band ``gamma``, weighted by ``size_weight``).
    """
    if init not in ("random", "prototype"):
        raise ValueError(f"unknown head initialisation {init!r}: random or prototype")
    out_dir = Path(out_dir)
    split = read_manifest(manifest)
    info = describe_foundation(foundation_dir)
    info = info.with_classes(task_classes(info.classes, organs))
    ds, mapping = load_support(info, split)
    if service is None:
        service = foundation_service(load_foundation(foundation_dir).model)
    n = crops_per_volume * len(split["support"])
    key = {"service": service.name, "support": split["support"], "classes": list(info.classes),
           "n": n, "seed": seed, "preprocessing": info.preprocessing.to_dict()}
    t0 = time.perf_counter()
    # the service's features come from crops of its own ROI: the white-box adaptation crop
    # (foundation.json's "adaptation") was measured for the white-box methods only
    cache = build_cache(service, crop_dataset(replace(info, adapt_crop=None), ds, mapping,
                                              split["support"]), n,
                        out_dir / "feature_cache", key=key, seed=seed, progress=progress)
    cache_seconds = time.perf_counter() - t0
    torch.manual_seed(seed)
    head = BlackBoxHead(service.channels, len(info.classes) + 1, kind)
    if init == "prototype":
        sample = [cache[i] for i in range(len(cache))]
        prototype_init(head, torch.stack([s["image"] for s in sample]),
                       torch.stack([s["label"] for s in sample]),
                       torch.as_tensor(mapping.channel_to_local))
    loop = LoopConfig(steps=steps, lr=RATES["head"], warmup=max(1, steps // 10), seed=seed,
                      checkpoint_every=max(10, steps // 4), patience=patience)
    loss, sizes = MarginalDiceCELoss(), None
    if unlabelled:
        loss, sizes = _transductive_loss(head, service, info, ds, mapping=mapping, split=split,
                                         unlabelled=list(unlabelled),
                                         gamma=gamma, weight=size_weight, progress=progress)
    summary = train_loop(head, cache, loss, loop, run_dir=out_dir, groups=_groups(head),
                         resume=resume, progress=progress, desc=f"black-box {kind}")
    summary.update(seconds=time.perf_counter() - t0, cache_seconds=cache_seconds)
    # the head autocasts itself (BlackBoxHead.fast), whatever the loop's own setting says
    summary["precision"] = precision(next(head.parameters()).device, head.fast)
    if sizes is not None:
        summary["transductive"] = sizes()
    save_state(out_dir / WEIGHTS, head.state_dict())
    write_json(out_dir / CONFIG, {
        "method": f"blackbox-{kind}", "kind": kind, "init": init, "classes": list(info.classes),
        "channels": service.channels, "service": service.name, "base_sha256": info.sha256,
        "trainable_parameters": sum(p.numel() for p in head.parameters()),
        "preprocessing": info.preprocessing.to_dict(), "manifest": split, "train": summary})
    return summary
