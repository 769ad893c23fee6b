"""MONAI preprocessing: RAS orientation, target spacing, HU window to [0, 1], body crop,
label values to local classes; then positive/negative patch sampling for training.

The deterministic part is cached by :func:`cached_dataset`, so later epochs redo no I/O.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from monai.data import CacheDataset, PersistentDataset
from monai.transforms import (
    ClassesToIndicesd,
    Compose,
    CropForegroundd,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapLabelValued,
    Orientationd,
    RandCropByLabelClassesd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from medpeft.data.augment import patch_augmentation
from medpeft.data.hounsfield import RequireCTVolumed
from medpeft.data.msd import MSDDataset
from medpeft.data.ontology import ClassMapping


@dataclass(frozen=True)
class Preprocessing:
    """Working geometry and intensity window. The fast CPU preset works at 5 mm."""

    spacing: tuple[float, float, float] = (5.0, 5.0, 5.0)
    hu_window: tuple[float, float] = (-175.0, 250.0)
    patch: tuple[int, int, int] = (64, 64, 32)

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(**{k: tuple(v) for k, v in d.items()})


# The fast CPU preset next to the seeds' own (their papers' and code's settings, 96^3 ROIs).
PRESETS: dict[str, Preprocessing] = {
    "cpu-fast": Preprocessing(),
    "seed-1.5mm": Preprocessing((1.5, 1.5, 1.5), (-175.0, 250.0), (96, 96, 96)),  # FSEFT, Universal
    "btcv": Preprocessing((1.5, 1.5, 2.0), (-175.0, 250.0), (96, 96, 96)),  # MONAI BTCV Swin UNETR
    "monai-ssl": Preprocessing((1.5, 1.5, 2.0), (-1000.0, 1000.0), (96, 96, 96)),  # its pre-training
}


def inside_body(x: torch.Tensor) -> torch.Tensor:
    """Foreground for cropping: anything above the bottom of the HU window (air is 0)."""
    return x > 0.0


RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def load_transforms(pp: Preprocessing, mapping: ClassMapping | None, with_label: bool = True) -> Compose:
    """Deterministic preprocessing of one case dict (``image`` [+ ``label``] paths)."""
    keys = ["image", "label"] if with_label else ["image"]
    modes = ("bilinear", "nearest") if with_label else ("bilinear",)
    steps = [
        LoadImaged(keys=keys, reader="NibabelReader"),
        RequireCTVolumed(keys="image"),  # one 3D volume, in HU
        EnsureChannelFirstd(keys=keys),
        # labels spelled out: MONAI 1.6 warns that their default is changing (same meaning: RAS)
        Orientationd(keys=keys, axcodes="RAS", labels=RAS_LABELS),
        Spacingd(keys=keys, pixdim=pp.spacing, mode=modes),
        ScaleIntensityRanged(keys="image", a_min=pp.hu_window[0], a_max=pp.hu_window[1],
                             b_min=0.0, b_max=1.0, clip=True),
        CropForegroundd(keys=keys, source_key="image", select_fn=inside_body, margin=2,
                        allow_smaller=True),
    ]
    if with_label and mapping is not None:
        values = sorted(mapping.value_to_local)
        steps.append(MapLabelValued(keys="label", orig_labels=values,
                                    target_labels=[mapping.value_to_local[v] for v in values]))
    return Compose(steps)


def class_balanced_ratios(n_local: int) -> list[float]:
    """Patch-centre ratios: every labelled organ equally often (small ones too), background a third.

    Sampling centres uniformly over organ voxels instead would almost never pick the pancreas or
    the bladder next to the liver, and the model would not learn them.
    """
    organs = n_local - 1
    return [organs / 2.0] + [1.0] * organs


def train_transforms(pp: Preprocessing, n_local: int, augment: str = "light", *,
                     class_names: tuple[str, ...] | None = None,
                     steady_organs: tuple[str, ...] = ()) -> tuple[list, list]:
    """(deterministic, random) training steps after loading: pad to the patch and index each
    class's voxels once (cached); then draw a class-balanced patch and augment it
    (``augment``, ``steady_organs``: see :mod:`medpeft.data.augment`; ``class_names``: the local
    classes in order)."""
    deterministic = [
        SpatialPadd(keys=["image", "label"], spatial_size=pp.patch),
        ClassesToIndicesd(keys="label", num_classes=n_local, indices_postfix="_classes"),
    ]
    random = [
        RandCropByLabelClassesd(keys=["image", "label"], label_key="label", spatial_size=pp.patch,
                                num_classes=n_local, ratios=class_balanced_ratios(n_local),
                                indices_key="label_classes", num_samples=1, warn=False),
        DeleteItemsd(keys="label_classes"),
        *patch_augmentation(augment, class_names=class_names, hu_window=pp.hu_window,
                            steady_organs=steady_organs),
        EnsureTyped(keys=["image", "label"], track_meta=False),
    ]
    return deterministic, random


def case_dicts(ds: MSDDataset, mapping: ClassMapping, names: list[str] | None = None) -> list[dict]:
    """Data dicts for MONAI, each carrying its dataset's channel -> local-class map."""
    chosen = ds.cases if names is None else [ds.case(n) for n in names]
    c2l = torch.tensor(mapping.channel_to_local, dtype=torch.long)
    return [{"image": str(c.image), "label": str(c.label), "case": c.name, "dataset": ds.name,
             "channel_to_local": c2l} for c in chosen]


def cache_key(pp: Preprocessing, mapping: ClassMapping) -> str:
    """What determines a preprocessed volume besides its files: the preprocessing and label map."""
    spec = json.dumps({"preprocessing": pp.to_dict(), "values": sorted(mapping.value_to_local.items()),
                       "local": list(mapping.local_names)}, sort_keys=True, default=list)
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def cached_dataset(items: list[dict], pp: Preprocessing, mapping_of: dict[str, ClassMapping],
                   train: bool = True, *, cache_dir: str | Path | None = None,
                   augment: str = "light",
                   steady_organs: tuple[str, ...] = ()) -> CacheDataset | PersistentDataset:
    """Load and preprocess every case once; random crops are drawn per epoch. The preprocessed
    volumes are held in memory, or with ``cache_dir`` written there once (MONAI
    ``PersistentDataset``, in a folder keyed by ``cache_key``) and read back by later runs, so a
    collection larger than memory is preprocessed once and later runs do no preprocessing."""
    groups = {}
    for item in items:
        groups.setdefault(item["dataset"], []).append(item)
    datasets = []
    for name, group in groups.items():
        pre = load_transforms(pp, mapping_of[name])
        # one flat pipeline: CacheDataset caches up to the first random transform, and a nested
        # Compose counts as random, which would silently disable the cache
        steps = list(pre.transforms)
        if train:
            deterministic, random = train_transforms(pp, mapping_of[name].n_local, augment,
                                                     class_names=mapping_of[name].local_names,
                                                     steady_organs=steady_organs)
            steps += deterministic + random
        transform = Compose(steps)
        if cache_dir is not None:
            folder = Path(cache_dir) / f"{name}-{cache_key(pp, mapping_of[name])}"
            datasets.append(PersistentDataset(group, transform=transform, cache_dir=folder))
        else:
            datasets.append(CacheDataset(group, transform=transform, cache_rate=1.0,
                                         num_workers=0, progress=False, copy_cache=train))
    return datasets[0] if len(datasets) == 1 else torch.utils.data.ConcatDataset(datasets)
