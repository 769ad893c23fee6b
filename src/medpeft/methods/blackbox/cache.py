"""Support-crop features computed once, stored as float16 memory maps, read back as a dataset.

An epoch of black-box training then costs no backbone forward pass: the cache holds a fixed set
of class-balanced crops (drawn with their own seed) and the features the service returned for
them. The folder is written under a temporary name and renamed when complete, so a crash never
leaves a half cache that looks finished; a cache made for other crops or another service is rebuilt.
"""
from __future__ import annotations

import json
import shutil
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medpeft.methods.blackbox.service import FeatureService
from medpeft.progress import Reporter
from medpeft.train.loop import batches


class FeatureCache(Dataset):
    """(features, local label, channel->local map) of each cached crop."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        n, c, shape = meta["n"], meta["channels"], tuple(meta["patch"])
        self.features = np.memmap(folder / "features.f16", np.float16, "r", shape=(n, c, *shape))
        self.labels = np.memmap(folder / "labels.u8", np.uint8, "r", shape=(n, 1, *shape))
        self.c2l = np.asarray(meta["channel_to_local"], dtype=np.int64)
        self.meta = meta

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.from_numpy(np.array(self.features[i], dtype=np.float32)),
                "label": torch.from_numpy(np.array(self.labels[i], dtype=np.int64)),
                "channel_to_local": torch.from_numpy(self.c2l[i])}


def build_cache(service: FeatureService, crops, n: int, folder: str | Path, *, key: dict,
                seed: int = 0, progress: Reporter | None = None) -> FeatureCache:
    """Features of ``n`` crops drawn from the ``crops`` dataset (reused when ``key`` matches)."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("key") == key:
        return FeatureCache(folder)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    task = progress.add_task(f"caching features of {n} crops", total=n) if progress else None
    feats = labels = None
    c2l = []
    for i, batch in enumerate(islice(batches(crops, 1, seed + 104729), n)):
        f = service(batch["image"]).cpu().numpy()
        if feats is None:
            shape = f.shape[2:]
            feats = np.memmap(tmp / "features.f16", np.float16, "w+", shape=(n, f.shape[1], *shape))
            labels = np.memmap(tmp / "labels.u8", np.uint8, "w+", shape=(n, 1, *shape))
        feats[i] = f[0]
        labels[i] = batch["label"][0].numpy().astype(np.uint8)
        c2l.append(batch["channel_to_local"][0].tolist())
        if progress:
            progress.advance(task)
    feats.flush()
    labels.flush()
    (tmp / "meta.json").write_text(json.dumps({
        "n": n, "channels": int(feats.shape[1]), "patch": list(feats.shape[2:]),
        "channel_to_local": c2l, "key": key}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return FeatureCache(folder)
