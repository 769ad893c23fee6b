"""Which volume to train on next, when the source datasets label different organs.

An organ labelled by one small dataset (the bladder by the spine/pelvis set) is otherwise the
centre of a few percent of the training crops, against the liver, which half the collection
labels, and the foundation never learns it. Organ-balanced weights give every organ the same share
of the draws, split evenly over the datasets that label it and then over their volumes.
"""
from __future__ import annotations

from collections import Counter

from medpeft.data.ontology import ClassMapping

SAMPLINGS = ("uniform", "organ-balanced")


def organ_balanced_weights(items: list[dict], mappings: dict[str, ClassMapping]) -> list[float]:
    """One weight per data dict (its ``dataset`` names its mapping): the sum, over the organs its
    dataset labels, of 1 / (datasets labelling that organ x volumes of its dataset)."""
    organs_of = {name: [c for c, local in enumerate(m.channel_to_local) if c and local]
                 for name, m in mappings.items()}
    volumes = Counter(item["dataset"] for item in items)
    labelled_by = Counter(c for name in volumes for c in organs_of[name])
    return [sum(1.0 / (labelled_by[c] * volumes[item["dataset"]]) for c in organs_of[item["dataset"]])
            for item in items]
