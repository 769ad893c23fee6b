"""Test helper: a phantom NIfTI volume written as a DICOM CT series with pydicom, the way a
scanner export looks (one file per slice, random file names, stored values + rescale)."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_ct_series(nifti: Path, folder: Path, *, modality: str = "CT", seed: int = 0,
                    drop: int | None = None, study_uid: str | None = None) -> str:
    """Write ``nifti`` as one DICOM series in ``folder`` (shuffled names); returns its UID.
    ``drop``: leave that slice out (a broken export)."""
    img = nib.load(str(nifti))
    hu = np.asarray(img.dataobj).astype(np.int32)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    sx, sy, sz = (np.linalg.norm(lps[:3, i]) for i in range(3))
    iop = [*(lps[:3, 0] / sx), *(lps[:3, 1] / sy)]
    series_uid, frame_uid = generate_uid(), generate_uid()
    study_uid = study_uid or generate_uid()
    names = np.random.default_rng(seed).permutation(hu.shape[2])
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(hu.shape[2]):
        if k == drop:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"IM{names[k]:05d}"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (
            study_uid, series_uid, frame_uid)
        ds.Modality, ds.PatientID, ds.PatientName = modality, "PHANTOM-1", "Phantom^One"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "O", "20261130", "120000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "A1", ""
        ds.SeriesNumber, ds.InstanceNumber = 3, int(names[k]) + 1  # numbers in no useful order
        ds.Manufacturer = "medpeft phantom"
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.ImagePositionPatient = [float(v) for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.PixelSpacing, ds.SliceThickness = [float(sy), float(sx)], float(sz)
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = (hu[:, :, k].T + 1024).astype(np.uint16).tobytes()
        ds.save_as(ds.filename, enforce_file_format=True)
    return series_uid
