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


def test_transductive_training_pulls_the_unlabelled_volumes_into_the_prior_band(
        collection, foundation_dir, tmp_path):
    """The size term is wired into black-box training: from the same start, seed and support
    volumes, the transductive head's soft volumes on the unlabelled scans lie closer to the band
    around the support masks' prior than the plain head's. Whether that raises Dice at a site is
    a measurement, not a test (benchmarks/transductive.py; on the v5 phantom it does not: docs/fseft.md).
    The features come from a seeded, untrained backbone of the tiny foundation's architecture, so
    the run is the same every time; the tiny foundation's own features change between runs. Both
    heads start from random rows: the default prototype start claims the support masks' share of
    voxels, so it starts inside the band and would leave the term nothing to do."""
    from medpeft.data.fewshot import make_split, write_manifest
    from medpeft.data.msd import load_msd
    from medpeft.methods.blackbox.predictor import load_blackbox, volume_features
    from medpeft.methods.blackbox.service import foundation_service
    from medpeft.models.backbones import build_backbone
    from medpeft.models.weights import describe_foundation
    from medpeft.pipelines.blackbox import blackbox_adapt
    target = load_msd(collection / "Task10_NewSite")
    split = make_split(target, 5, seed=0, n_test=3)
    manifest = write_manifest(tmp_path / "k5.json", split)
    unlabelled = [target.case(n).image for n in split["test"]]
    f = describe_foundation(foundation_dir)  # its architecture and preprocessing, not its weights
    torch.manual_seed(0)  # fixed features: the tiny foundation differs from run to run
    service = foundation_service(build_backbone(f.backbone, len(f.classes) + 1))
    features = [volume_features(service, p, f.preprocessing).float() for p in unlabelled]
    voxel_ml = float(np.prod(f.preprocessing.spacing)) / 1000
    heads, prior = {}, None
    for arm, scans in (("plain", ()), ("transductive", unlabelled)):
        summary = blackbox_adapt(foundation_dir, manifest, tmp_path / arm, kind="linear",
                                 organs=("spleen",), steps=60, service=service, unlabelled=scans,
                                 size_weight=20.0, init="random")
        prior = summary["transductive"]["prior_ml"]["spleen"] if scans else prior
        predictor, _ = load_blackbox(tmp_path / arm, service)
        heads[arm] = predictor.head
    penalty = SizePenalty({1: prior}, 0.2, voxel_ml, torch.tensor([0, 1]))
    with torch.no_grad():
        distance = {arm: float(sum(penalty(head(x)) for x in features)) / len(features)
                    for arm, head in heads.items()}
    print(f"prior {prior:.0f} mL; mean log-distance to the band: {distance}")
    assert distance["plain"] > 0.5  # the plain probe misses the band: the test has work to do
    # measured on these fixed features: plain 2.09, transductive 0.03 (after 40 steps 3.34 / 2.85,
    # after 100 the plain probe is in the band too). On the tiny foundation's features, which
    # change from run to run, the same test gave 0.35-4.50 / 0.03-4.46 and failed once in five.
    assert distance["transductive"] < min(distance["plain"] - 0.1, 0.7 * distance["plain"]), distance
