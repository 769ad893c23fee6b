"""Pre-training recipe pieces: contrast-phase augmentation and organ-balanced volume sampling."""
from __future__ import annotations

from collections import Counter
from itertools import islice

import pytest
import torch

from medpeft.data.augment import RandOrganIntensityd, patch_augmentation, shape_augmentation
from medpeft.data.balance import organ_balanced_weights
from medpeft.data.ontology import class_mapping
from medpeft.train.loop import batches

CLASSES = ("liver", "spleen", "kidney_right", "kidney_left", "urinary_bladder")


def test_organ_intensity_moves_each_organ_by_one_offset_and_leaves_background():
    label = torch.zeros(1, 8, 8, 8)
    label[:, :4] = 1
    label[:, 4:6] = 2
    image = torch.full((1, 8, 8, 8), 0.5)
    aug = RandOrganIntensityd(keys="image", label_key="label", max_offset=0.25, prob=1.0)
    aug.set_random_state(0)
    out = aug({"image": image, "label": label})["image"]
    shifts = {c: torch.unique(out[label == c] - 0.5) for c in (0, 1, 2)}
    assert torch.equal(shifts[0], torch.tensor([0.0]))  # background untouched
    assert len(shifts[1]) == len(shifts[2]) == 1  # one offset per organ
    assert shifts[1] != shifts[2] and all(0 < abs(float(shifts[c])) <= 0.25 for c in (1, 2))
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_soft_organ_offsets_ramp_across_the_edge_where_hard_ones_step():
    """``soft-phase-shape``: the organ's offset fades over voxels on both sides of its edge (a
    scanner's blur) instead of jumping on the label's voxel boundary; deep inside it is whole."""
    label = torch.zeros(1, 24, 8, 8)
    label[:, 8:20] = 1
    image = torch.full((1, 24, 8, 8), 0.5)
    hard = RandOrganIntensityd(max_offset=0.25, prob=1.0)
    soft = RandOrganIntensityd(max_offset=0.25, prob=1.0, edge_sigma=(1.0, 1.0))
    profiles = {}
    for name, aug in (("hard", hard), ("soft", soft)):
        aug.set_random_state(0)
        profiles[name] = (aug({"image": image, "label": label})["image"] - 0.5)[0, :, 4, 4]
    full = profiles["hard"][12]
    assert abs(float(full)) > 0.01 and torch.allclose(profiles["soft"][13], full, atol=1e-4)
    assert profiles["hard"][7] == 0 and abs(float(profiles["hard"][8] - full)) < 1e-6  # a step
    outside, inside = profiles["soft"][7] / full, profiles["soft"][8] / full  # a ramp
    assert 0.1 < outside < 0.5 < inside < 0.9, (float(outside), float(inside))
    kinds = [type(t).__name__ for t in patch_augmentation("soft-phase-shape")]
    assert kinds == [type(t).__name__ for t in patch_augmentation("phase-shape")]
    organ = next(t for t in patch_augmentation("soft-phase-shape") if isinstance(t, RandOrganIntensityd))
    assert organ.edge_sigma is not None

def test_shape_augmentation_moves_image_and_label_together():
    """Rotated or scaled patches change the label's shape, and an image that is a copy of the
    label, moved by the same draw (linear) and rounded, agrees with it (nearest) on the organs'
    voxels; left in place it would agree on at most 0.94 of them (seed 1)."""
    label = torch.zeros(1, 32, 32, 32)
    label[:, 8:24, 6:18, 6:26] = 1
    label[:, 4:12, 21:29, 10:20] = 2
    (affine,) = shape_augmentation()
    affine.set_random_state(1)
    moved = 0
    for _ in range(16):
        out = affine({"image": label.clone(), "label": label.clone()})
        out_label, out_image = torch.as_tensor(out["label"]), torch.as_tensor(out["image"]).round()
        assert set(torch.unique(out_label).tolist()) <= {0.0, 1.0, 2.0}  # labels stay labels
        moved += not torch.equal(out_label, label)
        organs = (out_label > 0) | (out_image > 0)
        assert (out_image[organs] == out_label[organs]).float().mean() > 0.945
    assert 4 <= moved <= 12  # about half the patches (prob 0.5)
    assert len(patch_augmentation("phase-shape")) == len(patch_augmentation("phase")) + 1
    # ``shape`` (adaptation): the same move before the light intensity jitter, no phase offsets
    shape = [type(t) for t in patch_augmentation("shape")]
    assert shape == [type(affine)] + [type(t) for t in patch_augmentation("light")]


def test_contrast_keeps_only_the_organ_offsets_of_phase():
    """``contrast`` is ``phase`` without its intensity curve, blur and noise: on a patch with one
    organ, every voxel of the organ moves by one offset and the background stays as it was (to the
    light jitter's scale and shift, here drawn out), where ``phase`` also curves, blurs and noises
    the whole patch. ``contrast-shape`` adds the same rotation and scaling as ``phase-shape``."""
    image = torch.full((1, 16, 16, 16), 0.5)
    label = torch.zeros(1, 16, 16, 16)
    label[:, 4:12, 4:12, 4:12] = 1
    kinds = {name: [type(t).__name__ for t in patch_augmentation(name)]
             for name in ("contrast", "contrast-shape", "phase", "phase-shape")}
    assert kinds["contrast"] == ["RandOrganIntensityd", "RandScaleIntensityd", "RandShiftIntensityd"]
    assert kinds["contrast-shape"] == ["RandAffined", *kinds["contrast"]]
    assert set(kinds["contrast"]) < set(kinds["phase"]) and kinds["phase-shape"][0] == "RandAffined"
    (organ, *_) = patch_augmentation("contrast")
    organ.set_random_state(3)
    moved = 0
    for _ in range(8):
        out = torch.as_tensor(organ({"image": image.clone(), "label": label})["image"])
        inside, outside = out[label > 0], out[label == 0]
        assert torch.all(outside == 0.5) and torch.allclose(inside, inside[0].expand_as(inside))
        moved += bool(inside[0] != 0.5)
    assert 2 <= moved <= 7  # 60% of patches


def test_steady_organs_keep_their_intensity_while_the_others_move():
    """A steady organ is never moved by the per-organ offsets; the other organs get the very
    offsets they would get without it (the same draws), so holding one organ changes nothing else."""
    image = torch.full((1, 12, 12, 12), 0.5)
    label = torch.zeros(1, 12, 12, 12)
    label[:, 2:6] = 1  # liver
    label[:, 7:10] = 2  # spleen
    names = ("background", "liver", "spleen")
    (free, *_), (held, *_) = (patch_augmentation("contrast", class_names=names, steady_organs=s)
                              for s in ((), ("spleen",)))
    free.set_random_state(5)
    held.set_random_state(5)
    liver_moved = 0
    for _ in range(8):
        a = torch.as_tensor(free({"image": image.clone(), "label": label})["image"])
        b = torch.as_tensor(held({"image": image.clone(), "label": label})["image"])
        assert torch.all(b[label == 2] == 0.5) and torch.equal(a[label != 2], b[label != 2])
        liver_moved += bool(b[label == 1][0] != 0.5)
    assert liver_moved >= 2
    for name in ("shape", "light", "enhancement-shape"):
        with pytest.raises(ValueError, match="random per-organ offsets"):
            patch_augmentation(name, class_names=names, steady_organs=("spleen",))
    with pytest.raises(ValueError, match="class names"):
        patch_augmentation("contrast", steady_organs=("spleen",))


def test_strong_shape_moves_more_patches_and_further():
    """``contrast-strong-shape`` is ``contrast-shape`` with its affine on 80% of the patches (not
    half) and scaling by up to 30% (not 15%): a labelled cube changes size more often and more."""
    names = {name: [type(t).__name__ for t in patch_augmentation(name)]
             for name in ("contrast-shape", "contrast-strong-shape")}
    assert names["contrast-strong-shape"] == names["contrast-shape"]
    label = torch.zeros(1, 40, 40, 40)
    label[:, 12:28, 12:28, 12:28] = 1
    counts = {}
    for strong in (False, True):
        (affine,) = shape_augmentation(strong=strong)
        affine.set_random_state(2)
        sizes = [float(torch.as_tensor(affine({"image": label.clone(), "label": label.clone()})
                                       ["label"]).sum() / label.sum()) for _ in range(24)]
        counts[strong] = (sum(s != 1.0 for s in sizes), max(abs(s - 1.0) for s in sizes))
    assert counts[True][0] >= 16 and counts[False][0] <= 16, counts
    assert counts[True][1] > 1.4 * counts[False][1], counts


def test_unknown_augmentation_is_refused():
    assert len(patch_augmentation("phase")) > len(patch_augmentation("light"))
    with pytest.raises(ValueError, match="unknown augmentation"):
        patch_augmentation("heavy")


def _collection():
    """A multi-organ set of 2 volumes, a liver set of 6 and a bladder set of 1."""
    sets = {"multi": ({1: "liver", 2: "spleen", 3: "kidney"}, 2), "liver": ({1: "liver"}, 6),
            "bladder": ({1: "bladder"}, 1)}
    mappings = {name: class_mapping({0: "background", **labels}, CLASSES)
                for name, (labels, _) in sets.items()}
    items = [{"dataset": name, "case": f"{name}{i}"} for name, (_, n) in sets.items()
             for i in range(n)]
    return items, mappings


def test_organ_balanced_weights_give_every_organ_the_same_share():
    items, mappings = _collection()
    weights = organ_balanced_weights(items, mappings)
    by_set = Counter()
    for item, w in zip(items, weights):
        by_set[item["dataset"]] += w
    # liver: half to each of its 2 datasets; spleen and both kidneys: all to "multi";
    # the bladder: all to its single volume, however few volumes label it
    assert by_set["multi"] == pytest.approx(0.5 + 1 + 1 + 1)
    assert by_set["liver"] == pytest.approx(0.5)
    assert by_set["bladder"] == pytest.approx(1.0)
    assert sum(weights) == pytest.approx(len(CLASSES))
    assert weights[-1] > 6 * weights[2]  # the one bladder volume outweighs a liver volume


def test_weighted_batches_draw_in_proportion_and_never_a_zero_weight_volume():
    data = [{"i": torch.tensor([i])} for i in range(3)]
    drawn = Counter(int(b["i"][0]) for b in islice(batches(data, 1, seed=0, weights=[0, 1, 3]), 400))
    assert drawn[0] == 0 and drawn[2] > 2 * drawn[1] > 0
    with pytest.raises(ValueError, match="sampling weights"):
        next(batches(data, 1, seed=0, weights=[1, 1]))
