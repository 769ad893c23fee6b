"""Class prototypes of support features: the mean feature vector of each labelled class."""
from __future__ import annotations

import torch


def voxel_features(features: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) feature maps as a (voxels, C) table, float32."""
    return features.float().movedim(1, -1).reshape(-1, features.shape[1])


def class_means(feats: torch.Tensor, labels: torch.Tensor) -> dict[int, torch.Tensor]:
    """{class: mean feature} over the voxels of each class present in ``labels`` (voxels,)."""
    labels = labels.reshape(-1).long()
    return {cls: feats[labels == cls].mean(0) for cls in labels.unique().tolist()}
