"""DICOM Segmentation out: one SEG object per input series, written by highdicom.

The SEG references its source series and shares its frame of reference; each model class is one
segment coded with SNOMED CT (``SNOMED`` below, beside the ontology's names), and every segment
names the algorithm (medpeft and its version). Viewers (OHIF, 3D Slicer, PACS) show it over the
CT it came from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medpeft.io import atomic_path

# organ -> (SNOMED CT code, meaning): pydicom's SCT dictionary names where it has the concept;
# the two kidneys by their lateral structures. Classes missing here are coded as a generic
# "Anatomical Structure" and keep their name as the segment label.
SNOMED: dict[str, tuple[str, str]] = {
    "liver": ("10200004", "Liver"),
    "spleen": ("78961009", "Spleen"),
    "kidney_right": ("9846003", "Right kidney"),
    "kidney_left": ("18639004", "Left kidney"),
    "stomach": ("69695003", "Stomach"),
    "pancreas": ("15776009", "Pancreas"),
    "gallbladder": ("28231008", "Gallbladder"),
    "aorta": ("15825003", "Aorta"),
    "inferior_vena_cava": ("64131007", "Inferior vena cava"),
    "urinary_bladder": ("89837001", "Urinary bladder"),
    "vertebrae": ("51282000", "Vertebra"),
    "esophagus": ("32849002", "Esophagus"),
    "duodenum": ("38848004", "Duodenum"),
    "portal_vein_and_splenic_vein": ("32764006", "Portal vein"),
    "prostate": ("41216001", "Prostate"),
}
ANATOMICAL_STRUCTURE = ("91723000", "Anatomical Structure")


def medpeft_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("medpeft")
    except PackageNotFoundError:
        return "unknown"


def _segment_descriptions(classes: tuple[str, ...]):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="medpeft", family=codes.cid7162.ArtificialIntelligence, version=medpeft_version())
    out = []
    for number, organ in enumerate(classes, start=1):
        value, meaning = SNOMED.get(organ, ANATOMICAL_STRUCTURE)
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=organ,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=hd.sr.CodedConcept(value, "SCT", meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm))
    return out


def write_dicom_seg(path: str | Path, channels: np.ndarray, source_files: list[Path],
                    classes: tuple[str, ...]) -> Path:
    """Write model channels (X = column, Y = row, Z = slice in ``source_files`` order, as
    ``medpeft.data.dicom.series_to_nifti`` lays them out) as a DICOM SEG over those slices."""
    try:
        import highdicom as hd
        import pydicom
    except ImportError as err:
        raise ImportError("DICOM-SEG output needs the dicom extra: pip install "
                          "'medpeft[dicom]'") from err
    sources = [pydicom.dcmread(str(f)) for f in source_files]
    if channels.shape != (sources[0].Columns, sources[0].Rows, len(sources)):
        raise ValueError(f"prediction of shape {channels.shape} does not match the series "
                         f"({sources[0].Columns} x {sources[0].Rows} x {len(sources)})")
    frames = np.ascontiguousarray(np.transpose(channels, (2, 1, 0))).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(classes),
        series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="medpeft", manufacturer_model_name="medpeft",
        software_versions=medpeft_version(), device_serial_number="none",
        series_description="medpeft organ segmentation")
    with atomic_path(path) as tmp:
        seg.save_as(str(tmp))
    return Path(path)
