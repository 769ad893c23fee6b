"""Segment DICOM CT series: each series found by its UID, predicted on the NIfTI path, written
as NIfTI in the series' geometry and / or as a DICOM SEG over its slices."""
from __future__ import annotations

from pathlib import Path

import torch

from medpeft.data.dicom import find_series, series_to_nifti
from medpeft.data.transforms import Preprocessing
from medpeft.infer.predict import failure_reason, prepare_output, save_prediction, segment_and_review
from medpeft.progress import Reporter

FORMATS = ("nifti", "dicom-seg")


def predict_series(model: torch.nn.Module, folder: str | Path, out_dir: str | Path,
                   pp: Preprocessing, *, classes: tuple[str, ...], fmt: str = "nifti",
                   overwrite: bool = False, progress: Reporter | None = None, largest_component: bool = False,
                   bf16: bool = False) -> tuple[list[Path], dict[str, str]]:
    """One output per CT series under ``folder``, and each series' organs to review
    (``review.csv``, by series UID); returns (written, failures by series UID).

    A series that is not CT, or has missing slices, uneven spacing or mixed orientations, is
    reported in ``failures`` and the others go on; existing outputs are kept unless ``overwrite``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    series = find_series(folder)
    if not series:
        raise FileNotFoundError(f"{folder}: no DICOM files in it")
    if not any(s.modality == "CT" for s in series):
        found = ", ".join(sorted({s.modality for s in series}))
        raise ValueError(f"{folder}: no CT series (found: {found})")
    out_dir = prepare_output(out_dir, classes)
    written, failures = [], {}
    task = progress.add_task("predicting series", total=len(series)) if progress else None
    for item in series:
        target = out_dir / (f"{item.uid}.nii.gz" if fmt == "nifti" else f"{item.uid}.seg.dcm")
        try:
            if not item.usable:
                raise ValueError("; ".join(item.problems))
            if overwrite or not target.exists():
                _predict_one(model, item, target, pp, classes=classes, fmt=fmt,
                             largest_component=largest_component, bf16=bf16)
            written.append(target)
        except Exception as err:  # noqa: BLE001  (one bad series must not stop the others)
            # the series' own words, not the path of its NIfTI copy
            failures[f"series {item.uid}"] = failure_reason(err).replace(
                str(_nifti_copy(out_dir, item.uid)), "its voxels (after RescaleSlope / RescaleIntercept)")
        if progress:
            progress.advance(task)
    return written, failures


def _nifti_copy(out_dir: Path, uid: str) -> Path:
    """Where a series is written as NIfTI for the model (removed when its prediction is done)."""
    return out_dir / ".series" / f"{uid}.nii.gz"


def _predict_one(model, item, target: Path, pp: Preprocessing, *, classes: tuple[str, ...],
                 fmt: str, largest_component: bool, bf16: bool) -> None:
    work = _nifti_copy(target.parent, item.uid)
    try:
        series_to_nifti(item, work)
        channels = segment_and_review(model, work, pp, case=item.uid, out_dir=target.parent,
                                      classes=classes, largest_component=largest_component, bf16=bf16)
        if fmt == "nifti":
            save_prediction(target, channels, work, classes)
        else:
            from medpeft.infer.dicom_seg import write_dicom_seg
            write_dicom_seg(target, channels, item.files, classes)
    finally:
        work.unlink(missing_ok=True)
        if work.parent.is_dir() and not any(work.parent.iterdir()):
            work.parent.rmdir()
