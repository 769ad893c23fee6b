"""The partial-label (marginal) loss never pushes unlabelled organs towards background."""
from __future__ import annotations

import torch
from monai.losses import DiceCELoss

from medpeft.data.ontology import class_mapping
from medpeft.train.losses import MarginalDiceCELoss

CLASSES = ("liver", "spleen", "kidney_right", "kidney_left")


def _logits(channel: torch.Tensor, n: int = 5, strength: float = 8.0) -> torch.Tensor:
    """Logits (1, n, 4, 4, 4) confidently predicting ``channel`` per voxel."""
    return torch.nn.functional.one_hot(channel, n).permute(3, 0, 1, 2)[None].float() * strength


def test_unlabelled_organ_is_not_punished_and_not_pushed_down():
    # liver-only dataset: spleen voxels are "background" there. The model says spleen; fine.
    mapping = class_mapping({0: "background", 1: "liver"}, CLASSES)
    truth_channels = torch.zeros(4, 4, 4, dtype=torch.long)
    truth_channels[:2] = 1  # liver
    truth_channels[2:] = 2  # spleen, which this dataset does not label
    logits = _logits(truth_channels).requires_grad_(True)
    local = (truth_channels == 1).long()[None, None]  # dataset's own labels: liver=1, else 0
    c2l = torch.tensor([mapping.channel_to_local])
    loss = MarginalDiceCELoss()(logits, local, c2l)
    assert loss.item() < 0.05
    loss.backward()
    spleen_grad = logits.grad[0, 2][truth_channels == 2]
    assert spleen_grad.abs().max() < 1e-3  # no push away from the unlabelled organ
    # ...whereas plain CE over all classes calls the same prediction badly wrong
    plain = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    assert plain(logits.detach(), local).item() > 1.0


def test_merged_label_covers_both_kidneys():
    mapping = class_mapping({0: "background", 1: "kidney"}, CLASSES)
    assert mapping.channel_to_local == (0, 0, 0, 1, 1)
    ch = torch.zeros(4, 4, 4, dtype=torch.long)
    ch[:, :2] = 3
    ch[:, 2:] = 4  # right and left kidney, both "kidney" in this dataset
    local = (ch > 0).long()[None, None]
    assert MarginalDiceCELoss()(_logits(ch), local, torch.tensor([mapping.channel_to_local])) < 0.05


def test_fully_labelled_equals_standard_dice_ce():
    mapping = class_mapping({0: "background", **{i + 1: c for i, c in enumerate(CLASSES)}}, CLASSES)
    assert mapping.fully_labelled
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 6, 6)
    target = torch.randint(0, 5, (2, 1, 6, 6, 6))
    ours = MarginalDiceCELoss()(logits, target, torch.tensor([mapping.channel_to_local] * 2))
    ref = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, smooth_nr=1e-5,
                     smooth_dr=1e-5)(logits, target)
    assert torch.allclose(ours, ref, atol=1e-4)


def test_fully_labelled_fast_path_matches_the_marginal_form():
    # an identity channel->local map takes plain softmax CE; it must score like the merged form
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 6, 6)
    target = torch.randint(0, 5, (2, 1, 6, 6, 6))
    identity = torch.arange(5).repeat(2, 1)
    permuted = torch.tensor([[0, 1, 2, 4, 3]] * 2)  # the same partition, not the identity
    fast = MarginalDiceCELoss()(logits, target, identity)
    swapped = target.clone()
    swapped[target == 3], swapped[target == 4] = 4, 3
    merged = MarginalDiceCELoss()(logits, swapped, permuted)
    assert torch.allclose(fast, merged, atol=1e-5)
