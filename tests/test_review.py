"""predict's review flags: each organ's volume and confidence, and the organs a reader should check."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medpeft.cli import app
from medpeft.data.msd import load_msd
from medpeft.evaluate.review_check import review_check, review_check_line
from medpeft.infer.review import (
    LOW,
    MISSING,
    REVIEW_BELOW,
    flagged,
    organ_reviews,
    read_reviews,
    record_reviews,
)
from medpeft.models.weights import shipped_foundation


def test_organ_reviews_measure_volume_and_confidence_and_flag_low_and_missing_organs():
    channels = np.zeros((4, 4, 4), dtype=np.uint8)
    channels[0, :2] = 1  # 8 voxels, sure
    channels[1, :2] = 2  # 8 voxels, unsure
    winning = np.full(channels.shape, 0.99, dtype=np.float32)
    winning[1, :2] = 0.6
    rows = organ_reviews("case", channels, winning, 0.5, ("liver", "spleen", "aorta"))
    by_organ = {r["organ"]: r for r in rows}
    assert by_organ["liver"]["volume_ml"] == 4.0 and by_organ["liver"]["review"] == ""
    assert abs(by_organ["liver"]["confidence"] - 0.99) < 1e-4
    assert abs(by_organ["spleen"]["confidence"] - 0.6) < 1e-4 and by_organ["spleen"]["review"] == LOW
    assert by_organ["aorta"] == {"case": "case", "organ": "aorta", "volume_ml": 0.0,
                                 "confidence": None, "review": MISSING}


def test_review_csv_replaces_a_cases_rows_and_keeps_the_others(tmp_path):
    row = {"case": "a", "organ": "liver", "volume_ml": 1.0, "confidence": 0.5, "review": LOW}
    record_reviews(tmp_path, [row, {**row, "case": "b"}])
    record_reviews(tmp_path, [{**row, "confidence": 0.9, "review": ""}])  # case a again
    rows = {r["case"]: r for r in read_reviews(tmp_path)}
    assert set(rows) == {"a", "b"} and rows["a"]["confidence"] == "0.9"
    assert [r["case"] for r in flagged(tmp_path)] == ["b"] and flagged(tmp_path, {"a"}) == []
    (tmp_path / "review.csv").write_text("patient,note\n1,x\n")  # somebody else's file
    with pytest.raises(ValueError, match=r"review.csv: not a medpeft review file"):
        record_reviews(tmp_path, [row])


def test_predict_flags_the_organs_of_a_scan_whose_organs_it_cannot_see(collection, tmp_path):
    """The same CT with every soft tissue set to 40 HU (no organ contrast left): the model's
    confidence falls and its organs are flagged; on the clean CT at most one is."""
    image = nib.load(str(load_msd(collection / "Task06_SourceHoldout").cases[0].image))
    voxels = np.asarray(image.dataobj)
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(voxels, image.affine), str(inputs / "clean.nii.gz"))
    flat = np.where(voxels > -500, 40, voxels).astype(voxels.dtype)
    nib.save(nib.Nifti1Image(flat, image.affine), str(inputs / "flat.nii.gz"))
    out = tmp_path / "out"
    run = lambda: CliRunner().invoke(app, ["predict", "--base", str(shipped_foundation()),  # noqa: E731
                                           "--in", str(inputs), "--out", str(out)],
                                     env={"COLUMNS": "200"})
    result = run()
    assert result.exit_code == 0, result.output
    rows = read_reviews(out)
    assert len(rows) == 20 and {r["case"] for r in rows} == {"clean", "flat"}
    confidence = {case: np.mean([float(r["confidence"] or 0) for r in rows if r["case"] == case])
                  for case in ("clean", "flat")}
    assert confidence["clean"] - confidence["flat"] > 0.05, confidence
    clean, flat = flagged(out, {"clean"}), flagged(out, {"flat"})
    assert len(clean) <= 1 and len(flat) >= 3, (clean, flat)
    assert f"{len(clean) + len(flat)} organ(s) to review" in result.output
    assert all(f"flat {r['organ']}: {r['review']}" in result.output for r in flat)
    liver = next(r for r in rows if r["case"] == "clean" and r["organ"] == "liver")
    assert float(liver["volume_ml"]) > 100 and float(liver["confidence"]) >= REVIEW_BELOW
    # a re-run keeps both outputs and their rows, and adds the new input's
    nib.save(nib.Nifti1Image(voxels, image.affine), str(inputs / "again.nii.gz"))
    assert run().exit_code == 0
    assert {r["case"] for r in read_reviews(out)} == {"again", "clean", "flat"}
    # somebody else's review.csv in the output folder is refused by name before any work
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "review.csv").write_text("patient,note\n")
    refused = CliRunner().invoke(app, ["predict", "--base", str(shipped_foundation()), "--in",
                                       str(inputs), "--out", str(tmp_path / "theirs")],
                                 env={"COLUMNS": "200"})
    assert refused.exit_code == 2 and "review.csv: not a medpeft review file" in refused.output
    assert not any((tmp_path / "theirs").glob("*.nii.gz"))


def test_review_check_counts_failures_caught_and_good_organs_flagged():
    rows = [{"dice": 0.2, "confidence": 0.6}, {"dice": 0.3, "confidence": 0.95},  # one caught
            {"dice": 0.1, "confidence": None},  # not found: flagged
            {"dice": 0.9, "confidence": 0.7}, {"dice": 0.9, "confidence": 0.9},  # one false alarm
            {"dice": float("nan"), "confidence": 0.5}]  # not in the labels: not counted
    check = review_check(rows)
    assert check == {"below": REVIEW_BELOW, "organs": 5, "failed": 3, "caught": 2, "false_alarms": 1}
    assert "2 of 3 failed organs (Dice < 0.5) flagged, 1 of 2 good organs flagged" in review_check_line(check)
    assert review_check(rows, below=0.65)["false_alarms"] == 0
