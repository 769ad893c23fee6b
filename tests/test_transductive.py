"""Size priors and the size penalty of transductive adaptation; largest-component post-processing."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medpeft.infer.predict import keep_largest_components
from medpeft.infer.transductive import SizePenalty, largest_component_ml, size_prior


def test_largest_component_and_a_robust_prior(tmp_path):
    mask = np.zeros((20, 20, 20), bool)
    mask[1:6, 1:6, 1:5] = True  # 100 voxels
    mask[10:12, 10:12, 10:12] = True  # a stray blob of 8
    assert largest_component_ml(mask, 2.0 / 1000) == pytest.approx(0.2)
    mask[0, 1, 1] = True  # now cut by the field of view: no size to learn from
    assert largest_component_ml(mask, 2.0 / 1000) is None
    paths = []
    for i, side in enumerate([10, 10, 10, 11, 30]):  # one atypical patient among five
        label = np.zeros((32, 32, 32), np.uint8)
        label[1:side + 1, 1:11, 1:11] = 1
        path = tmp_path / f"{i}.nii.gz"
        nib.save(nib.Nifti1Image(label, np.diag([1.0, 1.0, 1.0, 1.0])), str(path))
        paths.append(path)
    assert size_prior(paths, {0: 0, 1: 1}) == {1: pytest.approx(1.0)}  # median of 1.0 mL volumes
    assert size_prior(paths[3:], {0: 0, 1: 1})[1] == pytest.approx((1.1 + 3.0) / 2)  # K < 5: mean


def test_size_penalty_is_zero_inside_the_band_and_pulls_towards_it():
    c2l = torch.tensor([0, 1])
    penalty = SizePenalty({1: 100.0}, gamma=0.2, voxel_ml=1.0, channel_to_local=c2l)
    def logits_for(n_organ):  # n voxels certainly organ, the rest certainly background
        z = torch.full((1, 2, 1000), -10.0)
        z[0, 0] = 10.0
        z[0, 1, :n_organ], z[0, 0, :n_organ] = 10.0, -10.0
        return z.view(1, 2, 10, 10, 10)
    assert float(penalty(logits_for(100))) == pytest.approx(0.0, abs=1e-3)
    assert float(penalty(logits_for(50))) == pytest.approx(np.log(80 / 50), abs=1e-2)
    assert float(penalty(logits_for(200))) == pytest.approx(np.log(200 / 120), abs=1e-2)
    z = torch.zeros(1, 2, 10, 10, 10, requires_grad=True)  # 500 mL predicted: too large
    penalty(z).backward()
    assert (z.grad[0, 1] > 0).all() and (z.grad[0, 0] < 0).all()  # descent shrinks the organ
    with pytest.raises(ValueError, match="gamma"):
        SizePenalty({1: 1.0}, 1.5, 1.0, c2l)


def test_keep_largest_components_per_organ():
    a = np.zeros((10, 10, 10), np.uint8)
    a[1:4, 1:4, 1:4] = 1
    a[7:9, 7:9, 7:9] = 1  # a second, smaller liver blob
    a[5, 5, 5] = 2
    b = keep_largest_components(a)
    assert (b == 1).sum() == 27 and (b == 2).sum() == 1 and b[8, 8, 8] == 0
