"""Contrast-phase augmentation that follows each organ's contrast enhancement.

``phase`` moves every organ by its own random offset (up to +-106 HU). That offset flips the sign
of thin contrasts the model needs: the spleen (116 HU in portal phase) against the tissue in its
hollow (70-85 HU). Phases do not do that. Removing the contrast agent lowers each organ by its
own enhancement, strongly enhancing organs (kidney cortex, aorta) by much, the bladder and bone by
nothing, and unlabelled soft tissue (bowel wall, muscle) by a little. So the spleen stays above
the tissue in its hollow in most draws (85% against 65% under ``phase``; tests).
``RandContrastEnhancementd`` draws one washout per patch (the fraction of the contrast agent's
enhancement taken away: 1 is an unenhanced scan, below 0 a more enhanced one, as arterial phase
is for arteries and kidneys) and moves each organ by that fraction of
its textbook portal-venous enhancement, with an organ's own spread around it, and unlabelled
soft tissue by that fraction of ``SOFT_TISSUE_HU``; an optional oral contrast brightens the
stomach. Organs without a figure here move by the jitter only.
"""
from __future__ import annotations

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

from medpeft.data.ontology import resolve

# Mean portal-venous enhancement over the unenhanced scan (HU), from abdominal CT textbook
# figures: parenchyma 50-70, kidney cortex ~140, arteries and veins ~100-130, urine and bone none.
# Keys are the ontology's organs; a label name is resolved to them first ("right_kidney", "ivc").
ENHANCEMENT_HU: dict[str, float] = {
    "liver": 50.0, "spleen": 70.0, "pancreas": 55.0, "kidney_left": 140.0, "kidney_right": 140.0,
    "kidney_tumor": 80.0, "aorta": 125.0, "inferior_vena_cava": 100.0,
    "portal_vein_and_splenic_vein": 120.0, "stomach": 45.0, "duodenum": 40.0, "esophagus": 30.0,
    "adrenal_gland_left": 40.0, "adrenal_gland_right": 40.0, "gallbladder": 0.0,
    "urinary_bladder": 0.0, "vertebrae": 0.0, "prostate": 30.0,
}
# Unlabelled voxels between SOFT_TISSUE_RANGE_HU (bowel wall, muscle, vessels) enhance by about
# this much; fat, air, bone and fluid do not.
SOFT_TISSUE_HU = 30.0
SOFT_TISSUE_RANGE_HU = (20.0, 150.0)


def enhancement_hu(organs: tuple[str, ...]) -> float:
    """The mean enhancement of the organs one label covers (0 for none known)."""
    known = [ENHANCEMENT_HU[o] for o in organs if o in ENHANCEMENT_HU]
    return float(np.mean(known)) if known else 0.0


class RandContrastEnhancementd(RandomizableTransform, MapTransform):
    """Move each labelled organ to a random contrast phase: by ``-washout * enhancement * spread +
    jitter`` HU, where ``washout`` (one per patch) is drawn in ``washout_range``, ``spread`` per
    organ in ``spread_range`` and ``jitter`` per organ within ``+-jitter_hu``. Unlabelled soft
    tissue moves by ``-washout * SOFT_TISSUE_HU``. With ``oral_prob`` the stomach
    brightens by up to ``oral_hu`` (positive oral contrast). Intensities are the ``hu_window``
    mapped to [0, 1] and are clipped there."""

    def __init__(self, keys: KeysCollection = "image", *, label_key: str = "label",
                 class_names: tuple[str, ...], hu_window: tuple[float, float], prob: float = 0.6,
                 washout_range: tuple[float, float] = (-0.3, 1.0),
                 spread_range: tuple[float, float] = (0.75, 1.25), jitter_hu: float = 15.0,
                 oral_prob: float = 0.3, oral_hu: float = 200.0):
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.label_key, self.hu_window = label_key, hu_window
        organs = [resolve(name) for name in class_names]
        self.enhancement = np.array([enhancement_hu(o) for o in organs], np.float32)
        self.stomach = organs.index(("stomach",)) if ("stomach",) in organs else None
        self.washout_range, self.spread_range = washout_range, spread_range
        self.jitter_hu = jitter_hu
        self.oral_prob, self.oral_hu = oral_prob, oral_hu

    def offsets_hu(self, washout: float) -> np.ndarray:
        """One draw of every class's offset (HU) at ``washout``; the background (class 0) stays."""
        n = len(self.enhancement)
        spread = self.R.uniform(*self.spread_range, size=n)
        offsets = -washout * self.enhancement * spread + self.R.uniform(-self.jitter_hu,
                                                                       self.jitter_hu, size=n)
        if self.stomach is not None and self.R.random() < self.oral_prob:
            offsets[self.stomach] += self.R.uniform(0.0, self.oral_hu)
        offsets[0] = 0.0
        return offsets.astype(np.float32)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        low, high = self.hu_window
        washout = float(self.R.uniform(*self.washout_range))
        label = torch.as_tensor(d[self.label_key]).long()
        table = torch.as_tensor(self.offsets_hu(washout) / (high - low), device=label.device)
        organ_shift = table[label]
        for key in self.key_iterator(d):
            image = d[key]
            hu = image * (high - low) + low
            soft = (label == 0) & (hu >= SOFT_TISSUE_RANGE_HU[0]) & (hu <= SOFT_TISSUE_RANGE_HU[1])
            shift = organ_shift - soft * (washout * SOFT_TISSUE_HU / (high - low))
            d[key] = (image + shift.to(image.dtype)).clamp(0.0, 1.0)
        return d
