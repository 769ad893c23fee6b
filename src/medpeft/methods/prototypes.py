"""Class prototypes of support features: the mean feature vector of each labelled class, and the
cut at which a prototype direction claims the share of voxels its class is labelled on."""
from __future__ import annotations

import torch


def voxel_features(features: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) feature maps as a (voxels, C) table, float32."""
    return features.float().movedim(1, -1).reshape(-1, features.shape[1])


def class_means(feats: torch.Tensor, labels: torch.Tensor) -> dict[int, torch.Tensor]:
    """{class: mean feature} over the voxels of each class present in ``labels`` (voxels,)."""
    labels = labels.reshape(-1).long()
    return {cls: feats[labels == cls].mean(0) for cls in labels.unique().tolist()}


def claim_threshold(scores: torch.Tensor, is_organ: torch.Tensor) -> float:
    """The cut on ``scores`` (one per support voxel) above which exactly the organ's labelled
    share of voxels lies, midway between the two voxels it separates (so two clusters of equal
    share are cut halfway between their centres).

    Only the two order statistics around the cut are needed: a selection (``kthvalue``) finds
    them in linear time, where sorting the support's millions of voxels took over a second a
    class on one core."""
    scores = scores.reshape(-1)
    n = scores.numel()
    kept = min(max(int(n - is_organ.sum()), 1), n - 1)
    below = scores.kthvalue(kept).values  # the kept-th smallest
    if int((scores <= below).sum()) > kept:  # a tie: the next order statistic is the same value
        above = below
    else:
        above = scores[scores > below].min()
    return float(below + above) / 2
