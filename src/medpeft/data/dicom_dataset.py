"""A folder of DICOM CT series with DICOM Segmentation ground truth, read as a dataset.

A hospital's labelled scans come as CT series and the SEG objects drawn on them. Every usable CT
series that a SEG references becomes a case named by its SeriesInstanceUID. The series and its
SEG are converted once to NIfTI (the image by ITK in HU, :mod:`medpeft.data.dicom`; the SEG by
highdicom, frame by frame over the series' SOP instances in position order) into a cache folder
keyed by their UIDs, so splitting, training and scoring are the NIfTI path. Label values follow
the segment labels, one numbering for the whole folder. A series with problems (not CT, missing
slices, ...), a SEG whose series is not here and a series without a SEG are named in
``meta["skipped"]``, and the rest is used.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medpeft.data.dicom import DicomSeries, find_series, series_to_nifti
from medpeft.data.msd import Case, DataError, MSDDataset
from medpeft.io import atomic_path


def dicom_cache() -> Path:
    """Where converted series live: $MEDPEFT_CACHE/dicom (default ~/.cache/medpeft/dicom); never
    the hospital's own folder, which may be read-only."""
    return Path(os.environ.get("MEDPEFT_CACHE", Path.home() / ".cache" / "medpeft")) / "dicom"


def looks_like_dicom(root: Path, *, probe: int = 20) -> bool:
    """Whether ``root`` holds DICOM files (the DICM preamble) and no NIfTI; reads a few headers."""
    if any(root.glob("*.nii*")):
        return False
    for n, path in enumerate(p for p in root.rglob("*") if p.is_file()):
        if n >= probe:
            return False
        with open(path, "rb") as fh:
            if fh.read(132)[128:] == b"DICM":
                return True
    return False


def _segment_name(label: str) -> str:
    return label.strip().lower().replace(" ", "_")


def _read_segs(seg_series: list[DicomSeries]) -> list:
    try:
        import highdicom as hd
    except ImportError as err:
        raise ImportError("DICOM SEG ground truth needs the dicom extra: pip install "
                          "'medpeft[dicom]'") from err
    return [(path, hd.seg.segread(str(path))) for s in seg_series for path in s.files]


def _label_volume(seg, ct: DicomSeries, value_of: dict[str, int]) -> np.ndarray:
    """The SEG's segments as one label map (slice, row, column) over the series' slices in
    position order (the headers ``find_series`` read), values by segment label."""
    numbers = list(seg.get_segment_numbers())
    pixels = seg.get_pixels_by_source_instance(ct.sop_uids, segment_numbers=numbers,
                                               combine_segments=True,
                                               relabel=False, assert_missing_frames_are_empty=True)
    lut = np.zeros(max(numbers) + 1, dtype=np.uint8)
    for n in numbers:
        lut[n] = value_of[_segment_name(seg.get_segment_description(n).segment_label)]
    return lut[pixels]


def _write_label(image: Path, labels: np.ndarray, path: Path) -> Path:
    """``labels`` (slice, row, column) in the geometry of the converted series ``image``."""
    import SimpleITK as sitk
    reference = sitk.ReadImage(str(image))
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(reference)
    with atomic_path(path) as tmp:  # the temporary file keeps the .nii.gz suffix ITK writes by
        sitk.WriteImage(out, str(tmp))
    return path


def _converted(ct: DicomSeries, cache: Path) -> Path:
    image = cache / f"{ct.uid}.nii.gz"
    if not image.is_file():
        with atomic_path(image) as tmp:
            series_to_nifti(ct, tmp)
    return image


def read_dicom_dataset(root: str | Path, *, cache: Path | None = None) -> MSDDataset:
    """The labelled CT series under ``root`` as a dataset (see the module docstring)."""
    root, cache = Path(root), cache or dicom_cache()
    series = find_series(root)
    cts = {s.uid: s for s in series if s.usable}
    skipped = [p for s in series if s.modality != "SEG" for p in s.problems]  # SEGs are labels
    segs = _read_segs([s for s in series if s.modality == "SEG"])
    names = sorted({_segment_name(seg.get_segment_description(n).segment_label)
                    for _, seg in segs for n in seg.get_segment_numbers()})
    value_of = {name: value for value, name in enumerate(names, start=1)}
    cases: dict[str, Case] = {}
    for path, seg in segs:
        uid = str(seg.get_source_image_uids()[0][1])
        if uid in cases:
            skipped.append(f"{path}: a second SEG of series {uid} (the first one is used)")
            continue
        if uid not in cts:
            skipped.append(f"{path}: its series {uid} is not a usable CT series in {root}")
            continue
        image, label = _converted(cts[uid], cache), cache / f"{seg.SOPInstanceUID}.seg.nii.gz"
        if not label.is_file():
            _write_label(image, _label_volume(seg, cts[uid], value_of), label)
        cases[uid] = Case(uid, image, label)
    skipped += [f"series {uid}: no DICOM SEG references it (no ground truth)"
                for uid in cts if uid not in cases]
    if not cases:
        raise DataError([f"{root}: no CT series with a DICOM SEG", *skipped])
    return MSDDataset(root, root.name, {0: "background", **{v: n for n, v in value_of.items()}},
                      sorted(cases.values(), key=lambda c: c.name),
                      {"layout": "dicom", "skipped": skipped})
