"""Dataset readers on tiny folders written in each public collection's exact on-disk layout."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medpeft.cli import app
from medpeft.data import label_maps
from medpeft.data.layouts import read_dataset, write_msd
from medpeft.data.msd import DataError, check_dataset, load_msd
from medpeft.data.ontology import ORGANS, class_mapping, resolve
from medpeft.data.survey import survey

AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])
SHAPE = (8, 8, 4)


def _nii(path: Path, data: np.ndarray | None = None, affine=AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full(SHAPE, -1000, np.int16) if data is None else data  # a CT in HU: air
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _label(*values: int) -> np.ndarray:
    out = np.zeros(SHAPE, np.uint8)
    for i, v in enumerate(values):
        out[i, :, :] = v
    return out


def test_flare22_btcv_kits_and_amos_read_with_their_organ_maps(tmp_path):
    flare = tmp_path / "FLARE22"
    for n in (1, 2):
        _nii(flare / "images" / f"FLARE22_Tr_{n:04d}_0000.nii.gz")
        _nii(flare / "labels" / f"FLARE22_Tr_{n:04d}.nii.gz", _label(1, 2, 13))
    ds = read_dataset(flare)
    assert ds.meta["layout"] == "flare22" and [c.name for c in ds.cases] == ["FLARE22_Tr_0001",
                                                                              "FLARE22_Tr_0002"]
    assert all(resolve(n) for v, n in ds.labels.items() if v)  # every FLARE organ is known
    m = class_mapping(ds.labels, ORGANS)
    assert m.value_to_local[2] == m.channel_to_local[ORGANS.index("kidney_right") + 1]
    check_dataset(ds)

    btcv = tmp_path / "BTCV"
    _nii(btcv / "RawData" / "Training" / "img" / "img0001.nii.gz")
    _nii(btcv / "RawData" / "Training" / "label" / "label0001.nii.gz", _label(10))
    ds = read_dataset(btcv)
    assert ds.meta["layout"] == "btcv" and resolve(ds.labels[10]) == ("portal_vein_and_splenic_vein",)
    check_dataset(ds)

    kits = tmp_path / "kits19"
    for n in (21, 161, 250):  # site 0 train, site 1 test, challenge test case (no segmentation)
        _nii(kits / "data" / f"case_{n:05d}" / "imaging.nii.gz")
        if n < 210:
            _nii(kits / "data" / f"case_{n:05d}" / "segmentation.nii.gz", _label(1, 2))
    ds = read_dataset(kits)
    assert [(c.name, c.site, c.split) for c in ds.cases] == [("case_00021", "site-0", "train"),
                                                             ("case_00161", "site-1", "test")]
    assert resolve(ds.labels[1]) == ("kidney_right", "kidney_left")

    amos = tmp_path / "amos22"
    entries = []
    for n in (1, 507):  # 507 is an MRI case
        _nii(amos / "imagesTr" / f"amos_{n:04d}.nii.gz")
        _nii(amos / "labelsTr" / f"amos_{n:04d}.nii.gz", _label(8, 9))
        entries.append({"image": f"./imagesTr/amos_{n:04d}.nii.gz",
                        "label": f"./labelsTr/amos_{n:04d}.nii.gz"})
    (amos / "dataset.json").write_text(json.dumps({
        "name": "AMOS", "labels": {str(k): v for k, v in label_maps.AMOS22.items()},
        "training": entries}))
    ds = read_dataset(amos)
    assert ds.meta["layout"] == "amos" and [c.name for c in ds.cases] == ["amos_0001"]
    assert resolve(ds.labels[8]) == ("aorta",) and resolve(ds.labels[9]) == ("inferior_vena_cava",)


def test_nnunet_v2_folder(tmp_path):
    root = tmp_path / "Dataset042_Kidney"
    _nii(root / "imagesTr" / "kid_001_0000.nii.gz")
    _nii(root / "labelsTr" / "kid_001.nii.gz", _label(1))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "kidney": 1},
        "numTraining": 1, "file_ending": ".nii.gz"}))
    ds = read_dataset(root)
    assert [c.name for c in ds.cases] == ["kid_001"] and ds.labels == {0: "background", 1: "kidney"}
    check_dataset(ds)


def _totalseg_subject(root: Path, name: str, masks: dict[str, np.ndarray]) -> None:
    _nii(root / name / "ct.nii.gz")
    for structure, mask in masks.items():
        _nii(root / name / "segmentations" / f"{structure}.nii.gz", mask.astype(np.uint8))


@pytest.mark.parametrize("version,heart", [("v1", "heart_myocardium"), ("v2", "heart")])
def test_totalsegmentator_masks_combine_into_one_label_map(tmp_path, version, heart):
    root = tmp_path / "Totalsegmentator_dataset"
    slab = lambda i: _label(*([0] * i + [1])).astype(bool)  # noqa: E731  (x = i)
    _totalseg_subject(root, "s0001", {"liver": slab(0), "vertebrae_L1": slab(1),
                                      "vertebrae_L2": slab(2), heart: slab(3)})
    _totalseg_subject(root, "s0002", {"liver": slab(0)})
    (root / "meta.csv").write_text("image_id;age;gender;institute;study_type;split\n"
                                   "s0001;60;m;A;ct abdomen;train\ns0002;70;f;B;ct thorax;test\n")
    ds = read_dataset(root)
    assert ds.meta == {"layout": "totalsegmentator", "version": version}
    assert [(c.site, c.split) for c in ds.cases] == [("A", "train"), ("B", "test")]
    check_dataset(ds)
    with pytest.raises(DataError, match="medpeft convert"):
        read_dataset(root, label_files=True)
    msd = load_msd(write_msd(ds, tmp_path / "msd"))
    check_dataset(msd)
    label = np.asarray(nib.load(str(msd.case("s0001").label)).dataobj)
    names = [msd.labels[int(v)] for v in label[:, 0, 0]]
    assert names[:4] == ["liver", "vertebrae_L1", "vertebrae_L2", heart]
    m = class_mapping(msd.labels, ("liver", "vertebrae"))
    assert m.local_names == ("background", "liver", "vertebrae")  # the vertebrae merge into one
    assert [m.value_to_local[int(v)] for v in label[:4, 0, 0]] == [1, 2, 2, 0]


def test_totalsegmentator_combined_variant(tmp_path):
    root = tmp_path / "ts_combined"
    _nii(root / "s0100" / "ct.nii.gz")
    _nii(root / "s0100" / "segmentations.nii.gz", _label(5, 52, 117))
    ds = read_dataset(root)
    case = ds.cases[0]
    assert case.label.name == "segmentations.nii.gz" and not case.parts
    assert [ds.labels[v] for v in (5, 52, 117)] == ["liver", "aorta", "costal_cartilages"]
    check_dataset(ds)


def test_a_folder_of_no_known_layout_says_what_was_looked_for(tmp_path):
    (tmp_path / "scans").mkdir()
    _nii(tmp_path / "scans" / "a.nii.gz")
    with pytest.raises(DataError, match="no dataset layout recognised") as err:
        read_dataset(tmp_path / "scans")
    assert "no dataset.json" in str(err.value) and "totalsegmentator" in str(err.value)
    with pytest.raises(DataError, match="layout 'nifti' not recognised"):
        read_dataset(tmp_path / "scans", layout="nifti")


def test_malformed_folder_names_every_bad_file(tmp_path):
    root = tmp_path / "FLARE22"
    good = _label(1)
    for n in range(1, 5):
        _nii(root / "images" / f"FLARE22_Tr_{n:04d}_0000.nii.gz")
    _nii(root / "labels" / "FLARE22_Tr_0001.nii.gz", good)
    # 0002: no label; 0003: wrong shape; 0004: a value FLARE'22 does not define
    _nii(root / "labels" / "FLARE22_Tr_0003.nii.gz", np.zeros((8, 8, 5), np.uint8))
    _nii(root / "labels" / "FLARE22_Tr_0004.nii.gz", _label(1, 99))
    s = survey(read_dataset(root))
    assert len(s.problems) == 3
    for bad in ("FLARE22_Tr_0002.nii.gz", "FLARE22_Tr_0003.nii.gz", "FLARE22_Tr_0004.nii.gz"):
        assert sum(bad in p for p in s.problems) == 1, (bad, s.problems)
    assert s.coverage == {"liver": 1} and s.n_cases == 4
    result = CliRunner().invoke(app, ["inspect", "data", str(root)], env={"COLUMNS": "250"})
    assert result.exit_code == 1 and "3 problem(s)" in result.output
    assert "FLARE22_Tr_0004.nii.gz: label values [99]" in result.output


def test_inspect_data_reports_geometry_and_coverage(tmp_path):
    root = tmp_path / "TS"
    _totalseg_subject(root, "s0001", {"liver": _label(1).astype(bool),
                                      "spleen": np.zeros(SHAPE, bool)})
    thick = np.diag([0.8, 0.8, 5.0, 1.0])
    _nii(root / "s0002" / "ct.nii.gz", affine=thick)
    _nii(root / "s0002" / "segmentations" / "liver.nii.gz", _label(2), affine=thick)  # not binary
    result = CliRunner().invoke(app, ["inspect", "data", str(root)], env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "0.8 x 0.8 x 3 .. 1.5 x 1.5 x 5" in result.output
    assert "s0002/segmentations/liver.nii.gz: a binary mask holds values [0, 2]" in result.output
    assert "1 / 2" in result.output  # liver present in the one readable case
