"""Medical Segmentation Decathlon / nnU-Net raw folders: read ``dataset.json`` and check every case.

Problems are collected, not raised one at a time: a user with one bad file among hundreds learns
about all of them at once, each named by path.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from medpeft.data.hounsfield import hounsfield_problem
from medpeft.data.volume_shape import volume_shape_problem


class DataError(ValueError):
    """Input data that medpeft cannot use; the message names every bad file and its problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid input data:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Case:
    """One CT volume: its image, and its labels as one label-map file or as per-structure binary
    masks (``parts``: (structure, path) pairs, as TotalSegmentator ships them); ``site`` and
    ``split`` where the collection defines them (Fed-KiTS19 institutions, TotalSegmentator's
    meta.csv)."""

    name: str
    image: Path
    label: Path | None
    parts: tuple[tuple[str, Path], ...] = ()
    site: str | None = None
    split: str | None = None


@dataclass
class MSDDataset:
    root: Path
    name: str
    labels: dict[int, str]
    cases: list[Case]
    meta: dict = field(default_factory=dict)

    def case(self, name: str) -> Case:
        return self.cases_named([name])[0]

    def cases_named(self, names: list[str]) -> list[Case]:
        """The cases ``names`` in order; a :class:`DataError` lists every name the folder lacks
        (a manifest of another dataset, or a case removed since the split)."""
        by_name = {c.name: c for c in self.cases}
        if unknown := [n for n in names if n not in by_name]:
            raise DataError([f"{self.root}: no case named {n!r}" for n in unknown])
        return [by_name[n] for n in names]


def case_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _parse_labels(raw: dict, source: Path) -> dict[int, str]:
    """MSD writes {"0": "background"}; nnU-Net v2 writes {"background": 0}."""
    try:
        if all(str(k).lstrip("-").isdigit() for k in raw):
            return {int(k): str(v) for k, v in raw.items()}
        return {int(v): str(k) for k, v in raw.items()}
    except (TypeError, ValueError) as err:
        raise DataError([f"{source}: 'labels' must map values to names ({err})"]) from err


def load_msd(root: str | Path) -> MSDDataset:
    """Read a dataset folder's ``dataset.json`` (paths are resolved, not yet checked)."""
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DataError([f"{meta_path}: missing (expected a Medical Segmentation Decathlon folder)"])
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise DataError([f"{meta_path}: not valid JSON ({err})"]) from err
    if "labels" not in meta or ("training" not in meta and "file_ending" not in meta):
        raise DataError([f"{meta_path}: needs 'labels' and 'training' entries (MSD) or "
                         "'labels' and 'file_ending' (nnU-Net v2)"])
    cases = []
    if "training" in meta:
        for entry in meta["training"]:
            image = root / entry["image"] if isinstance(entry, dict) else root / entry
            label = root / entry["label"] if isinstance(entry, dict) and entry.get("label") else None
            if not image.exists():  # nnU-Net v1 lists case.nii.gz for the file case_0000.nii.gz
                channel0 = image.with_name(f"{case_name(image)}_0000.nii.gz")
                image = channel0 if channel0.exists() else image
            cases.append(Case(case_name(image).removesuffix("_0000"), image, label))
    else:  # nnU-Net v2: imagesTr/<case>_0000<ending>, labelsTr/<case><ending>
        ending = meta["file_ending"]
        for image in sorted((root / "imagesTr").glob(f"*_0000{ending}")):
            name = image.name[: -len(f"_0000{ending}")]
            cases.append(Case(name, image, root / "labelsTr" / f"{name}{ending}"))
    return MSDDataset(root, meta.get("name", root.name), _parse_labels(meta["labels"], meta_path),
                      cases, meta)


def _open_nifti(path: Path, problems: list[str]) -> nib.Nifti1Image | None:
    if not path.exists():
        problems.append(f"{path}: file is missing")
        return None
    if not (path.name.endswith(".nii.gz") or path.name.endswith(".nii")):
        problems.append(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
        return None
    try:
        img = nib.load(str(path))
        img.header.get_data_shape()
        return img
    except Exception as err:  # nibabel raises several types for corrupt files
        problems.append(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})")
        return None


def check_case(case: Case, labels: dict[int, str], check_values: bool = True,
               found: set[str] | None = None) -> list[str]:
    """Every problem with one image/label pair, each message starting with the file's path.

    ``found`` (with ``check_values``) collects the names of the labels present in the case, from
    the same read of the voxels.
    """
    problems: list[str] = []
    image = _open_nifti(case.image, problems)
    shape_problem = volume_shape_problem(image.shape, case.image) if image is not None else None
    if shape_problem:
        return problems + [shape_problem]  # nothing else about it can be checked or used
    if case.parts:
        return problems + _check_parts(case, image, check_values, found)
    if case.label is None:
        problems.append(f"{case.image}: has no label file in dataset.json")
        return problems
    label = _open_nifti(case.label, problems)
    if image is None or label is None:
        return problems
    if check_values:
        problems += _intensity_problems(image, case.image)
    if image.shape[:3] != label.shape[:3]:
        problems.append(f"{case.label}: shape {label.shape} does not match image {image.shape}")
    elif not np.allclose(image.affine, label.affine, atol=1e-3):
        problems.append(f"{case.label}: affine does not match its image {case.image.name}")
    if check_values:
        try:
            values = np.unique(np.asarray(label.dataobj))
        except Exception as err:
            problems.append(f"{case.label}: cannot read voxel data ({err})")
            return problems
        unknown = sorted(set(values.astype(int).tolist()) - set(labels))
        if unknown or not np.allclose(values, np.round(values)):
            problems.append(f"{case.label}: label values {unknown} are not in dataset.json "
                            f"labels {sorted(labels)}")
        if found is not None:
            found.update(labels[v] for v in values.astype(int).tolist() if v in labels and v != 0)
    return problems


def _intensity_problems(image: nib.Nifti1Image, path: Path) -> list[str]:
    """The image's voxels read once: unreadable, or not a CT in Hounsfield units."""
    try:
        problem = hounsfield_problem(np.asarray(image.dataobj), path)
    except Exception as err:  # noqa: BLE001  (nibabel raises several types for corrupt data)
        return [f"{path}: cannot read voxel data ({err})"]
    return [problem] if problem else []


def _check_parts(case: Case, image: nib.Nifti1Image | None, check_values: bool,
                 found: set[str] | None = None) -> list[str]:
    """Per-structure binary masks: each must exist, match the image's grid and hold only 0/1."""
    problems = _intensity_problems(image, case.image) if image is not None and check_values else []
    for name, path in case.parts:
        mask = _open_nifti(path, problems)
        if mask is None or image is None:
            continue
        if mask.shape[:3] != image.shape[:3]:
            problems.append(f"{path}: shape {mask.shape} does not match image {image.shape}")
        elif not np.allclose(mask.affine, image.affine, atol=1e-3):
            problems.append(f"{path}: affine does not match its image {case.image.name}")
        elif check_values:
            values = set(np.unique(np.asarray(mask.dataobj)).tolist())
            if not values <= {0, 1}:
                problems.append(f"{path}: a binary mask holds values {sorted(values)}")
            if found is not None and 1 in values:
                found.add(name)
    return problems


def check_dataset(ds: MSDDataset, cases: list[Case] | None = None, check_values: bool = True) -> None:
    """Raise :class:`DataError` listing every problem in ``cases`` (default: all cases)."""
    problems: list[str] = []
    for case in cases if cases is not None else ds.cases:
        problems += check_case(case, ds.labels, check_values)
    if problems:
        raise DataError(problems)
