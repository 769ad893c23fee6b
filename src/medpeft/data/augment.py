"""Training-time intensity augmentation, named by what it prepares the model for.

Public CT collections are mostly portal-venous. A new hospital may scan without intravenous
contrast (kidney cortex ~35 HU instead of ~175), with oral contrast (stomach ~260 HU instead of
~10), at a lower dose or with a softer kernel. A model pre-trained on one phase learns to find
organs by their brightness and fails there. ``phase`` therefore moves each labelled organ's
intensity by its own random amount, remaps the whole intensity curve, and adds noise and blur,
so that the model has to rely on shape and position as well as on brightness.
``phase-shape`` adds random rotation and scaling of each patch: the source sets label an organ on
6 to 14 volumes, few shapes for a network to learn by heart.
``soft-phase-shape`` blurs each organ's offset across its edge (Gaussian, 0.5 to 1.5 voxels), as a
scanner's point spread and the resampling to the working grid blur every true edge: a step of
intensity exactly on the label's voxel boundary, which no scan has, is not there to be learnt.
Measured from v5 (800 steps against the same steps of phase-shape): spleen +0.04, source site
+0.008, K=5 -0.001 (docs/quality.md item 10); an option, not the default.
``enhancement-shape`` replaces the random per-organ offsets with each organ's own contrast
enhancement (:mod:`medpeft.data.enhancement`), which keeps the order of brightness between
neighbours that the random offsets flip.
``contrast`` and ``contrast-shape`` keep only the per-organ offsets of ``phase`` and
``phase-shape``, without the intensity curve (histogram shift), blur and noise. From random
weights (9,600 steps) they lift the source site, zero-shot and adaptation at once: the curve, blur
and noise cost every figure (docs/quality.md item 22).
``contrast-strong-shape`` is ``contrast-shape`` with stronger rotation and scaling (80% of the
patches, each axis scaled by up to 30%): thick organs of the few source patients made thin and back.
*Steady organs* (``steady_organs``) are organs the per-organ offsets never move: their brightness
against the background stays what the source scans show. The offsets teach the network to ignore
an organ's own intensity step, and the spleen's thin crescents are found by that step. Holding the
spleen steady in the last stages gives it back at the source site; the price is zero-shot Dice at
the new site, not adaptation (docs/quality.md items 26, 29 and 30).
"""
from __future__ import annotations

import numpy as np
import torch
from monai.config import KeysCollection
from monai.networks.layers import GaussianFilter
from monai.transforms import (
    MapTransform,
    RandAffined,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    RandomizableTransform,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from medpeft.data.enhancement import RandContrastEnhancementd

AUGMENTATIONS = ("light", "shape", "phase", "phase-shape", "soft-phase-shape", "enhancement-shape",
                 "contrast", "contrast-shape", "contrast-strong-shape")
# the augmentations that move each organ by its own random offset (steady organs apply to these):
# all but the ones without per-organ offsets and the textbook enhancement
RANDOM_OFFSETS = tuple(a for a in AUGMENTATIONS if a not in ("light", "shape", "enhancement-shape"))


class RandOrganIntensityd(RandomizableTransform, MapTransform):
    """Add an independent random offset to every labelled class's voxels (background untouched),
    then clip to the [0, 1] window: what a change of contrast phase does to organs. Offsets are
    in window units (1.0 = the whole HU window). ``edge_sigma``: (low, high) voxels of a Gaussian
    blur of the offset map, drawn per patch; None keeps a hard step at the label's edge.
    ``steady``: label values whose offset is always 0 (drawn all the same, so that the other
    classes' draws do not depend on which are steady)."""

    def __init__(self, keys: KeysCollection = "image", label_key: str = "label",
                 max_offset: float = 0.25, prob: float = 0.5,
                 edge_sigma: tuple[float, float] | None = None, steady: tuple[int, ...] = ()):
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.label_key, self.max_offset, self.edge_sigma = label_key, max_offset, edge_sigma
        self.steady = tuple(steady)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        label = torch.as_tensor(d[self.label_key]).long()
        n = int(label.max()) + 1
        offsets = self.R.uniform(-self.max_offset, self.max_offset, size=n).astype(np.float32)
        offsets[0] = 0.0
        offsets[[c for c in self.steady if c < n]] = 0.0
        shift = torch.as_tensor(offsets, device=label.device)[label]
        if self.edge_sigma is not None:
            sigma = float(self.R.uniform(*self.edge_sigma))
            shift = GaussianFilter(spatial_dims=shift.ndim - 1, sigma=sigma)(shift[None])[0]
        for key in self.key_iterator(d):
            image = d[key]
            d[key] = (image + shift.to(image.dtype)).clamp(0.0, 1.0)
        return d


def shape_augmentation(strong: bool = False) -> list:
    """Rotate (up to 15 degrees about each axis) and scale (each axis by its own draw, up to 15%)
    half of the patches, the anatomical variation of one organ between patients; ``strong``: 80%
    of the patches, scaled by up to 30%. Labels nearest, edges repeated."""
    prob, scale = (0.8, 0.3) if strong else (0.5, 0.15)
    return [RandAffined(keys=["image", "label"], prob=prob, rotate_range=(0.26, 0.26, 0.26),
                        scale_range=(scale, scale, scale), mode=("bilinear", "nearest"),
                        padding_mode="border")]


def organ_intensity(name: str, class_names: tuple[str, ...] | None,
                    hu_window: tuple[float, float] | None,
                    steady_organs: tuple[str, ...] = ()) -> MapTransform:
    """The per-organ intensity step of augmentation ``name``: textbook enhancement for
    ``enhancement-shape`` (which needs the patch's class names and HU window), random offsets
    otherwise, never moving the classes named in ``steady_organs``."""
    if name == "enhancement-shape":
        if class_names is None or hu_window is None:
            raise ValueError("augmentation 'enhancement-shape' needs the classes' names and the "
                             "HU window")
        return RandContrastEnhancementd(keys="image", label_key="label", class_names=class_names,
                                        hu_window=hu_window)
    steady = tuple(i for i, c in enumerate(class_names or ()) if i and c in steady_organs)
    return RandOrganIntensityd(keys="image", label_key="label", max_offset=0.25, prob=0.6,
                               edge_sigma=(0.5, 1.5) if name == "soft-phase-shape" else None,
                               steady=steady)


def patch_augmentation(name: str, *, class_names: tuple[str, ...] | None = None,
                       hu_window: tuple[float, float] | None = None,
                       steady_organs: tuple[str, ...] = ()) -> list:
    """The random steps of augmentation ``name`` after the patch is cropped: intensity, and for
    the ``-shape`` ones shape first. ``class_names``: the label's classes in order (needed by
    ``enhancement-shape`` and ``steady_organs``); ``hu_window``: the HU mapped to [0, 1];
    ``steady_organs``: organs the random offsets never move."""
    check_augmentation(name, steady_organs)
    if steady_organs and class_names is None:
        raise ValueError("steady organs need the label's class names")
    light = [RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
             RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5)]
    if name in ("light", "shape"):
        return [*(shape_augmentation() if name == "shape" else []), *light]
    shape = shape_augmentation(strong=name == "contrast-strong-shape") \
        if name not in ("phase", "contrast") else []
    moved = organ_intensity(name, class_names, hu_window, tuple(steady_organs))
    if name.startswith("contrast"):
        return [*shape, moved, *light]
    return [
        *shape,
        moved,
        RandHistogramShiftd(keys="image", num_control_points=(5, 10), prob=0.3),
        *light,
        RandGaussianSmoothd(keys="image", sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0),
                            sigma_z=(0.3, 1.0), prob=0.2),
        RandGaussianNoised(keys="image", std=0.03, prob=0.3),
    ]


def check_augmentation(name: str, steady_organs: tuple[str, ...] = ()) -> None:
    """Refuse an unknown augmentation, or steady organs where no random offsets move organs."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose from {AUGMENTATIONS}")
    if steady_organs and name not in RANDOM_OFFSETS:
        raise ValueError(f"steady organs ({', '.join(steady_organs)}) keep an organ out of the "
                         f"random per-organ offsets, which augmentation {name!r} does not draw; "
                         f"choose one of {RANDOM_OFFSETS}")
