"""DICOM CT series in: found by SeriesInstanceUID, checked, read by ITK.

A folder may hold one series or many, under any file names: every file is opened header-only
with pydicom, files are grouped by SeriesInstanceUID, and each series' slices are ordered by
their position along the slice normal (ImagePositionPatient projected on the normal of
ImageOrientationPatient), never by name or InstanceNumber. A series is checked before it is
read: a modality other than CT, mixed orientations, a missing slice or uneven spacing are
problems named with its UID. The pixels are read by SimpleITK (ITK's GDCM reader: geometry from
the same tags, intensities through RescaleSlope / RescaleIntercept) and written once as a NIfTI
file, so every later step (preprocessing, inference, geometry inversion) is the NIfTI path.

Needs the ``dicom`` extra (pydicom, SimpleITK; highdicom for writing DICOM-SEG).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"


def _pydicom():
    try:
        import pydicom
    except ImportError as err:
        raise ImportError("DICOM input needs the dicom extra: pip install 'medpeft[dicom]'") from err
    return pydicom


@dataclass
class DicomSeries:
    """One series of a folder: its UID, modality, slice files in position order, and problems."""

    uid: str
    modality: str
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    description: str = ""
    sop_uids: list[str] = field(default_factory=list)  # SOPInstanceUID of each file, same order

    @property
    def usable(self) -> bool:
        return not self.problems


def _normal(ds) -> np.ndarray | None:
    iop = getattr(ds, "ImageOrientationPatient", None)
    if iop is None or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    return np.cross(row, col)


def _position_problems(uid: str, headers: list) -> tuple[list, list[str]]:
    """The headers sorted along the slice normal, and the series' geometry problems."""
    orientations = {tuple(np.round(np.asarray(h.ImageOrientationPatient, float), 4))
                    for h in headers if getattr(h, "ImageOrientationPatient", None) is not None}
    if len(orientations) > 1:
        return headers, [f"series {uid}: mixed slice orientations ({len(orientations)} kinds)"]
    if len(orientations) == 0 or any(getattr(h, "ImagePositionPatient", None) is None
                                     for h in headers):
        return headers, [f"series {uid}: slices without ImagePositionPatient / "
                         "ImageOrientationPatient"]
    normal = _normal(headers[0])
    depth = [float(np.dot(normal, np.asarray(h.ImagePositionPatient, float))) for h in headers]
    order = np.argsort(depth)
    headers = [headers[i] for i in order]
    if len(headers) < 2:
        return headers, [f"series {uid}: a single slice is not a volume"]
    gaps = np.diff(np.sort(depth))
    step = float(np.median(gaps))
    if step <= 1e-6:
        return headers, [f"series {uid}: slices share one position (duplicates)"]
    missing = int(np.sum(np.round(gaps / step) - 1))
    if missing > 0:
        return headers, [f"series {uid}: {missing} missing slice(s) (gaps of up to "
                         f"{gaps.max():.2f} mm where slices are {step:.2f} mm apart)"]
    if np.max(np.abs(gaps - step)) > 0.01 * step + 1e-3:
        return headers, [f"series {uid}: uneven slice spacing ({gaps.min():.2f}-{gaps.max():.2f} mm)"]
    return headers, []


def find_series(folder: str | Path) -> list[DicomSeries]:
    """Every DICOM series under ``folder`` (recursively), each checked; non-DICOM files skipped."""
    pydicom = _pydicom()
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    groups: dict[str, list] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception:  # noqa: BLE001  (not DICOM: skipped)
            continue
        uid = str(getattr(ds, "SeriesInstanceUID", "")) or f"(no SeriesInstanceUID: {path.name})"
        ds.filename_ = path
        groups.setdefault(uid, []).append(ds)
    series = []
    for uid, headers in groups.items():
        modality = str(getattr(headers[0], "Modality", "?"))
        item = DicomSeries(uid, modality, description=str(getattr(headers[0],
                                                                "SeriesDescription", "")))
        images = [h for h in headers if str(getattr(h, "SOPClassUID", "")) in
                  (CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE) or hasattr(h, "Rows")]
        if modality != "CT":
            item.problems.append(f"series {uid}: modality {modality}, not CT")
            item.files = [h.filename_ for h in headers]  # e.g. the SEG objects of a labelled folder
        elif not images:
            item.problems.append(f"series {uid}: no image slices")
        else:
            ordered, problems = _position_problems(uid, images)
            item.files, item.problems = [h.filename_ for h in ordered], problems
            item.sop_uids = [str(getattr(h, "SOPInstanceUID", "")) for h in ordered]
        series.append(item)
    return series


def is_dicom_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds DICOM files and no NIfTI (the predict input's two kinds)."""
    folder = Path(folder)
    if not folder.is_dir() or any(folder.glob("*.nii*")):
        return False
    pydicom = _pydicom()
    return any(pydicom.misc.is_dicom(str(p)) for p in folder.rglob("*") if p.is_file())


def series_to_nifti(series: DicomSeries, path: str | Path) -> Path:
    """Read the series with SimpleITK in its position order and write it as NIfTI (HU)."""
    if not series.usable:
        raise ValueError("; ".join(series.problems))
    try:
        import SimpleITK as sitk
    except ImportError as err:
        raise ImportError("DICOM input needs the dicom extra: pip install 'medpeft[dicom]'") from err
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    image = sitk.Cast(reader.Execute(), sitk.sitkFloat32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path
