"""MONAI preprocessing: RAS, working spacing, [0, 1] window, local labels; cached after epoch 1."""
from __future__ import annotations

import shutil

import numpy as np
import torch

from medpeft.data.msd import load_msd
from medpeft.data.ontology import class_mapping
from medpeft.data.transforms import Preprocessing, cached_dataset, case_dicts, load_transforms

CLASSES = ("liver", "spleen", "kidney_right", "kidney_left")


def test_preprocessing_geometry_and_intensity(collection):
    ds = load_msd(collection / "Task02_Liver")  # stored LPS, 4 mm slices
    mapping = class_mapping(ds.labels, CLASSES)
    pp = Preprocessing()
    out = load_transforms(pp, mapping)(case_dicts(ds, mapping)[0])
    image, label = out["image"], out["label"]
    assert image.shape == label.shape and image.shape[0] == 1
    assert np.allclose(np.abs(np.diag(image.affine[:3, :3].numpy())), pp.spacing)
    assert (np.diag(image.affine[:3, :3].numpy()) > 0).all()  # RAS
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert set(torch.unique(label).tolist()) == {0.0, 1.0}


def test_second_epoch_does_no_io(collection, tmp_path):
    src = collection / "Task04_Spleen"
    copy = tmp_path / src.name
    shutil.copytree(src, copy)
    ds = load_msd(copy)
    mapping = class_mapping(ds.labels, CLASSES)
    data = cached_dataset(case_dicts(ds, mapping), Preprocessing(), {ds.name: mapping})
    first = [data[i][0]["image"].shape for i in range(len(data))]
    shutil.rmtree(copy / "imagesTr")  # any re-read would now fail
    shutil.rmtree(copy / "labelsTr")
    second = [data[i][0] for i in range(len(data))]
    assert [s["image"].shape for s in second] == first == [(1, 64, 64, 32)] * len(data)
    assert all(set(torch.unique(s["label"]).tolist()) <= {0.0, 1.0} for s in second)
    # the class-balanced crop finds the spleen: centres land on it 2 times in 3, so 8 draws per
    # volume all missing it has probability (1/3)^16
    assert any(data[i][0]["label"].max() == 1 for i in range(len(data)) for _ in range(8))
