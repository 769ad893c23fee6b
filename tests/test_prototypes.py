"""The prototype cut: the organ's labelled share of support voxels lies above it."""
from __future__ import annotations

import torch

from medpeft.methods.prototypes import claim_threshold


def _by_sorting(scores: torch.Tensor, is_organ: torch.Tensor) -> float:
    """The cut's definition, read off the sorted scores."""
    ranked = scores.sort().values
    kept = min(max(int(ranked.numel() - is_organ.sum()), 1), ranked.numel() - 1)
    return float(ranked[kept - 1] + ranked[kept]) / 2


def test_the_cut_is_the_midpoint_of_the_two_order_statistics_it_separates_ties_included():
    g = torch.Generator().manual_seed(0)
    for n, organ in ((2, 1), (10, 3), (1000, 50), (1000, 0), (1000, 1000), (5000, 4999)):
        for scores in (torch.randn(n, generator=g),
                       torch.randint(0, 4, (n,), generator=g).float()):  # many ties
            is_organ = torch.zeros(n, dtype=torch.bool)
            is_organ[torch.randperm(n, generator=g)[:organ]] = True
            assert claim_threshold(scores, is_organ) == _by_sorting(scores, is_organ), (n, organ)


def test_two_clusters_of_equal_share_are_cut_halfway_between_them():
    scores = torch.cat([torch.full((30,), -1.0), torch.full((10,), 3.0)])
    assert claim_threshold(scores, scores > 0) == 1.0
