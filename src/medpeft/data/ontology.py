"""Canonical organ names, their ids, and how a dataset's own label map relates to a model's classes.

Public CT collections label different subsets of organs under different names and values (a
kidney dataset may label both kidneys as one value). Everything in medpeft speaks canonical names;
a :class:`ClassMapping` tells the data pipeline and the partial-label loss how one dataset's label
values relate to one model's output channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ORGANS: tuple[str, ...] = (
    "liver",
    "spleen",
    "kidney_right",
    "kidney_left",
    "stomach",
    "pancreas",
    "gallbladder",
    "aorta",
    "inferior_vena_cava",
    "urinary_bladder",
    "vertebrae",
    # structures of the public abdominal collections (FLARE'22, AMOS, BTCV, KiTS, TotalSegmentator)
    "esophagus",
    "duodenum",
    "adrenal_gland_right",
    "adrenal_gland_left",
    "portal_vein_and_splenic_vein",
    "kidney_tumor",
    "prostate",
)
ORGAN_ID: dict[str, int] = {name: i + 1 for i, name in enumerate(ORGANS)}
EXTRA_ID_BASE = 100  # label ids of a model's classes outside the ontology: 100 + channel


def label_ids(classes: tuple[str, ...]) -> list[int]:
    """The label id written for each model class: its ontology id, else 100 + its channel."""
    return [ORGAN_ID.get(c, EXTRA_ID_BASE + i + 1) for i, c in enumerate(classes)]

# Names used by public datasets for a canonical organ or a union of organs.
ALIASES: dict[str, tuple[str, ...]] = {
    "kidney": ("kidney_right", "kidney_left"),
    "kidneys": ("kidney_right", "kidney_left"),
    "right_kidney": ("kidney_right",),
    "left_kidney": ("kidney_left",),
    "ivc": ("inferior_vena_cava",),
    "postcava": ("inferior_vena_cava",),
    "bladder": ("urinary_bladder",),
    "gall_bladder": ("gallbladder",),
    "spine": ("vertebrae",),
    "arota": ("aorta",),  # sic, AMOS 2022 dataset.json
    "right_adrenal_gland": ("adrenal_gland_right",),
    "left_adrenal_gland": ("adrenal_gland_left",),
    "portal_vein": ("portal_vein_and_splenic_vein",),
    "kidney_tumour": ("kidney_tumor",),
    # the FSEFT / Universal Model templates
    "rkidney": ("kidney_right",),
    "lkidney": ("kidney_left",),
    "gall": ("gallbladder",),
    "psv": ("portal_vein_and_splenic_vein",),
    "radrenal": ("adrenal_gland_right",),
    "ladrenal": ("adrenal_gland_left",),
}
# Prefixes naming a part of a canonical structure (TotalSegmentator: vertebrae_L1, vertebrae_T12).
PART_OF: dict[str, str] = {"vertebrae_": "vertebrae"}


def resolve(name: str) -> tuple[str, ...]:
    """Canonical organs that a dataset's label name covers (``()`` for unknown names)."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key in ORGAN_ID:
        return (key,)
    for prefix, organ in PART_OF.items():
        if key.startswith(prefix):
            return (organ,)
    return ALIASES.get(key, ())


@dataclass(frozen=True)
class ClassMapping:
    """How one dataset's label values relate to one model's output channels.

    ``value_to_local`` maps every raw label value to a compact local class (0 = background, which
    also absorbs labelled structures the model does not model). ``channel_to_local[c]`` is the local
    class a model channel ``c`` falls into; channels of organs that this dataset does not label fall
    into local background (0), which is what makes the loss *marginal* over unlabelled organs.
    """

    local_names: tuple[str, ...]
    value_to_local: dict[int, int]
    channel_to_local: tuple[int, ...]

    @property
    def n_local(self) -> int:
        return len(self.local_names)

    def value_lut(self) -> np.ndarray:
        """Lookup table from raw label values to local classes (``lut[label_array]``)."""
        lut = np.zeros(max(self.value_to_local) + 1, dtype=np.uint8)
        for value, local in self.value_to_local.items():
            lut[value] = local
        return lut

    @property
    def fully_labelled(self) -> bool:
        """True when every model channel has its own local class (no merging)."""
        return sorted(self.channel_to_local) == list(range(len(self.channel_to_local)))


def class_mapping(labels: dict[int, str], model_classes: tuple[str, ...]) -> ClassMapping:
    """Relate a dataset label map (value -> name, 0 = background) to a model's foreground classes.

    Values naming the same organs (TotalSegmentator's vertebrae_L1 ... vertebrae_C1) share one
    local class. Raises ``ValueError`` when a label's organs are only partly modelled (the union
    cannot be split) or when two labels claim one organ differently.
    """
    local_names = ["background"]
    value_to_local: dict[int, int] = {}
    channel_to_local = [0] * (len(model_classes) + 1)
    local_of: dict[tuple[str, ...], int] = {}
    for value in sorted(labels):
        name = labels[value]
        if value == 0:
            value_to_local[0] = 0
            continue
        organs = resolve(name)
        modelled = [o for o in organs if o in model_classes]
        if not modelled:
            value_to_local[value] = 0  # a structure the model does not know is background to it
            continue
        if len(modelled) != len(organs):
            raise ValueError(f"label '{name}' covers {organs} but the model only has {modelled}")
        if organs in local_of:
            value_to_local[value] = local_of[organs]
            continue
        local = local_of[organs] = len(local_names)
        is_part = any(name.lower().startswith(p) for p in PART_OF)
        local_names.append(organs[0] if is_part else name)
        value_to_local[value] = local
        for organ in modelled:
            channel = model_classes.index(organ) + 1
            if channel_to_local[channel]:
                raise ValueError(f"label '{name}' claims {organ}, already claimed by "
                                 f"'{local_names[channel_to_local[channel]]}'")
            channel_to_local[channel] = local
    return ClassMapping(tuple(local_names), value_to_local, tuple(channel_to_local))


def unmodelled_labels(labels: dict[int, str], model_classes: tuple[str, ...]) -> list[str]:
    """Names of a dataset's labels that :func:`class_mapping` makes background (they cover none of
    the model's classes), so a model trained on them never learns them."""
    to_local = class_mapping(labels, model_classes).value_to_local
    return [labels[value] for value in sorted(labels) if value != 0 and to_local[value] == 0]
