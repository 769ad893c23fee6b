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


@pytest.mark.xfail(strict=True, reason="on the v3 foundation (6,400 steps) the size prior no longer "
                   "helps here: plain 0.462 Dice / 104 mL, transductive 0.362 / 121 mL against an "
                   "80 mL prior (2026-11-30). Its premise fails on this phantom: the new site's "
                   "spleens, as the field of view shows them, measure 2-157 mL (median 74) and only "
                   "3 of 16 lie within the +-20% band of the median (2026-12-01)")
def test_size_prior_trims_an_over_segmenting_probe_and_improves_dice(collection, tmp_path):
    """Binary spleen task, K=5, linear probe: the plain probe over-segments the unlabelled scans;
    adapting with the size prior on them brings their volumes towards the band and raises Dice
    (demo phantom: 0.304 -> 0.358, predicted 400 -> 75-146 mL against a 94 mL prior)."""
    from medpeft.data.fewshot import make_split, write_manifest
    from medpeft.data.msd import load_msd
    from medpeft.data.ontology import class_mapping
    from medpeft.evaluate.metrics import evaluate_cases, mean_dice
    from medpeft.methods.blackbox.predictor import load_blackbox, volume_features
    from medpeft.methods.blackbox.service import foundation_service
    from medpeft.models.weights import load_foundation, shipped_foundation
    from medpeft.pipelines.blackbox import blackbox_adapt
    target = load_msd(collection / "Task10_NewSite")
    split = make_split(target, 5, seed=0, n_test=3)
    manifest = write_manifest(tmp_path / "k5.json", split)
    unlabelled = [target.case(n).image for n in split["test"]]
    f = load_foundation(shipped_foundation())
    service = foundation_service(f.model)
    features = [volume_features(service, p, f.preprocessing).float() for p in unlabelled]
    voxel_ml = float(np.prod(f.preprocessing.spacing)) / 1000
    result = {}
    for name, scans in (("plain", ()), ("transductive", unlabelled)):
        summary = blackbox_adapt(shipped_foundation(), manifest, tmp_path / name, kind="linear",
                                 organs=("spleen",), steps=100, service=service, unlabelled=scans)
        predictor, config = load_blackbox(tmp_path / name, service)
        with torch.no_grad():
            volumes = [float((predictor.head(x).argmax(1) == 1).sum()) * voxel_ml for x in features]
        rows = evaluate_cases(predictor, target, split["test"],
                              class_mapping(target.labels, ("spleen",)), pp=f.preprocessing,
                                            classes=("spleen",))
        result[name] = (mean_dice(rows), float(np.median(volumes)))
    prior = summary["transductive"]["prior_ml"]["spleen"]
    print(f"prior {prior:.0f} mL; (Dice, median volume mL): {result}")  # tiny: 80 mL;
    # plain (0.354, 179 mL), transductive (0.367, 66 mL)
    (plain_dice, plain_ml), (trans_dice, trans_ml) = result["plain"], result["transductive"]
    assert plain_ml > 1.2 * prior  # the plain probe over-segments
    assert 0.8 * prior <= trans_ml <= 1.2 * prior  # gamma = 0.2: inside the band
    assert trans_dice > plain_dice + 0.02  # a gain outside the run-to-run noise, not 0.005
