"""DICOM in, DICOM-SEG out: a phantom volume exported as a CT series (shuffled file names) is
found by its UID, read by ITK in position order and segmented exactly as its NIfTI twin; the SEG
that highdicom reads back references the series, shares its frame of reference and codes every
organ. Broken series are named by UID while the others are still written."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_series import write_ct_series
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from medpeft.cli import app
from medpeft.data.dicom import find_series
from medpeft.evaluate.review_check import review_check, review_check_line
from medpeft.infer.review import read_reviews
from medpeft.models.weights import shipped_foundation

hd = pytest.importorskip("highdicom")
runner = CliRunner()


def _predict(inp, out, *extra):
    return runner.invoke(app, ["predict", "--base", str(shipped_foundation()), "--in", str(inp),
                               "--out", str(out), *extra], env={"COLUMNS": "200"})


def _write_sr(folder):
    """A structured report: DICOM, but no CT image series."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(folder / "report"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = generate_uid(), generate_uid(), "SR"
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(ds.filename, enforce_file_format=True)


def test_dicom_series_segment_like_their_nifti_twin_and_round_trip_as_seg(collection, tmp_path,
                                                                         monkeypatch):
    volume = sorted((collection / "Task10_NewSite" / "imagesTr").glob("*.nii.gz"))[0]
    good = write_ct_series(volume, tmp_path / "dicom" / "a", seed=1)
    mr = write_ct_series(volume, tmp_path / "dicom" / "b", modality="MR", seed=2)
    gap = write_ct_series(volume, tmp_path / "dicom" / "c", drop=5, seed=3)
    (tmp_path / "dicom" / "notes.txt").write_text("not DICOM")
    raw = write_ct_series(volume, tmp_path / "dicom" / "d", seed=4)  # then its intercept lost:
    for f in (tmp_path / "dicom" / "d").iterdir():  # the stored values read as HU, air at 24
        ds = pydicom.dcmread(f)
        ds.RescaleIntercept = 0
        ds.save_as(f)
    series = {s.uid: s for s in find_series(tmp_path / "dicom")}
    assert set(series) == {good, mr, gap, raw} and series[good].usable
    assert "not CT" in series[mr].problems[0] and "missing slice" in series[gap].problems[0]
    from medpeft.cli_common import console
    monkeypatch.setattr(console, "width", 240)  # whole UIDs in the table's cells
    listed = runner.invoke(app, ["inspect", "data", str(tmp_path / "dicom")])
    assert listed.exit_code == 1 and all(uid in listed.output for uid in (good, mr, gap))
    assert "missing slice" in listed.output and "modality MR" in listed.output

    assert _predict(volume, tmp_path / "from-nifti").exit_code == 0
    result = _predict(tmp_path / "dicom", tmp_path / "from-dicom")
    assert result.exit_code == 1 and mr in result.output and gap in result.output
    assert f"{raw}: ValueError: its voxels (after RescaleSlope / RescaleIntercept): no voxel below" \
        in result.output and "not a CT in Hounsfield units" in result.output  # not segmented
    twin = np.asarray(nib.load(str(tmp_path / "from-nifti" / volume.name)).dataobj)
    ours = nib.load(str(tmp_path / "from-dicom" / f"{good}.nii.gz"))
    assert np.array_equal(np.asarray(ours.dataobj), twin)  # voxel for voxel
    assert np.allclose(ours.affine, nib.load(str(volume)).affine, atol=1e-4)
    # the review rows name the series by its UID and agree with the NIfTI twin's
    reviews = {(r["case"], r["organ"]): r for r in read_reviews(tmp_path / "from-dicom")}
    assert {case for case, _ in reviews} == {good}
    twin_rows = {r["organ"]: r for r in read_reviews(tmp_path / "from-nifti")}
    assert all(reviews[(good, o)]["volume_ml"] == r["volume_ml"] for o, r in twin_rows.items())

    result = _predict(tmp_path / "dicom", tmp_path / "seg", "--format", "dicom-seg")
    assert result.exit_code == 1 and (tmp_path / "seg" / f"{good}.seg.dcm").is_file()
    seg = hd.seg.segread(str(tmp_path / "seg" / f"{good}.seg.dcm"))
    ct = [pydicom.dcmread(str(f)) for f in series[good].files]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == good
    assert seg.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    labels = json.loads((tmp_path / "seg" / "labels.json").read_text())  # organ id -> organ
    by_channel = sorted(labels.items(), key=lambda kv: int(kv[0]))  # ids ascend with channels
    described = {d.segment_number: d.segment_label for d in seg.SegmentSequence}
    assert list(described.values()) == [organ for _, organ in by_channel]
    liver = next(d for d in seg.SegmentSequence if d.segment_label == "liver")
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert liver.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "medpeft"
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[d.SOPInstanceUID for d in ct], combine_segments=True,
        skip_overlap_checks=True)
    ids = np.array([0] + [int(i) for i, _ in by_channel], dtype=np.int32)
    assert np.array_equal(ids[np.transpose(frames, (2, 1, 0))], twin)


def test_a_folder_without_ct_is_refused_by_name(tmp_path):
    _write_sr(tmp_path / "sr-only")
    result = _predict(tmp_path / "sr-only", tmp_path / "out")
    assert result.exit_code != 0 and "no CT series (found: SR)" in result.output


def test_a_dicom_folder_with_seg_ground_truth_splits_and_evaluates_like_its_nifti_twin(
        collection, tmp_path, monkeypatch):
    """A hospital's labelled scans as DICOM: CT series (shuffled names) and the SEG objects drawn
    on them. `split` and `evaluate` take the folder; the labels read back equal the NIfTI twin's
    voxel for voxel and every per-organ Dice equals the twin's. A broken series and one without
    ground truth are named and left out."""
    from medpeft.data.msd import load_msd
    from medpeft.evaluate.metrics import score_model
    from medpeft.infer.dicom_seg import write_dicom_seg
    from medpeft.models.weights import load_foundation
    monkeypatch.setenv("MEDPEFT_CACHE", str(tmp_path / "cache"))
    twin = load_msd(collection / "Task10_NewSite")
    organs = tuple(twin.labels[v] for v in range(1, max(twin.labels) + 1))  # values 1..n
    hospital, uid_of = tmp_path / "hospital", {}
    for i, case in enumerate(twin.cases[:2]):
        uid = write_ct_series(case.image, hospital / f"ct{i}", seed=i)
        ct = next(s for s in find_series(hospital / f"ct{i}") if s.uid == uid)
        label = np.asarray(nib.load(str(case.label)).dataobj).astype(np.uint8)
        write_dicom_seg(hospital / f"seg{i}" / "seg.dcm", label, ct.files, organs)
        uid_of[case.name] = uid
    unlabelled = write_ct_series(twin.cases[2].image, hospital / "unlabelled", seed=7)
    broken = write_ct_series(twin.cases[3].image, hospital / "broken", drop=3, seed=8)

    result = runner.invoke(app, ["split", str(hospital), "--k", "1", "--n-test", "1", "--out",
                                 str(tmp_path / "k2.json")], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert f"series {unlabelled}: no DICOM SEG" in result.output and broken in result.output
    manifest = json.loads((tmp_path / "k2.json").read_text())
    from medpeft.cli_common import console
    monkeypatch.setattr(console, "width", 240)
    listed = runner.invoke(app, ["inspect", "data", str(hospital)])  # SEGs are labels, not problems
    assert listed.exit_code == 1 and "labels (SEG)" in listed.output
    assert "1 problem(s)" in listed.output and "missing slice" in listed.output
    assert set(manifest["support"] + manifest["test"]) == set(uid_of.values())

    foundation = shipped_foundation()
    result = runner.invoke(app, ["evaluate", "--foundation", str(foundation), "--manifest",
                                 str(tmp_path / "k2.json"), "--out", str(tmp_path / "eval")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert manifest["test"][0] in (tmp_path / "eval" / "report.html").read_text()  # the whole UID
    assert (tmp_path / "eval" / "log.txt").is_file()  # library chatter in the log, not on screen
    ours = {(r["case"], r["organ"]): r["dice"]
            for r in json.loads((tmp_path / "eval" / "dice.json").read_text())}
    names = {uid: name for name, uid in uid_of.items()}
    test = [names[uid] for uid in manifest["test"]]
    _, _, rows = score_model(load_foundation(foundation).model, twin, test,
                             load_foundation(foundation), pred_dir=None)
    assert len(rows) == len(ours) > 0
    for r in rows:
        assert ours[(uid_of[r["case"]], r["organ"])] == pytest.approx(r["dice"], abs=1e-6, nan_ok=True)
    # each organ's confidence beside its Dice, and the review flags checked against them
    scored = json.loads((tmp_path / "eval" / "dice.json").read_text())
    assert all(r["confidence"] is None or 0 < r["confidence"] <= 1 for r in scored)
    assert any(r["confidence"] for r in scored)
    assert review_check_line(review_check(rows)) in " ".join(result.output.split())
    from medpeft.data.layouts import read_dataset
    read = read_dataset(hospital)
    for name, uid in uid_of.items():  # the SEG read back, voxel for voxel, by organ name
        mine = np.asarray(nib.load(str(read.case(uid).label)).dataobj)
        theirs = np.asarray(nib.load(str(twin.case(name).label)).dataobj)
        assert mine.shape == theirs.shape
        for value, organ in twin.labels.items():
            back = next(v for v, o in read.labels.items() if o == organ) if value else 0
            assert np.array_equal(mine == back, theirs == value), organ
