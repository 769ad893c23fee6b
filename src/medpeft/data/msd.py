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


class DataError(ValueError):
    """Input data that medpeft cannot use; the message names every bad file and its problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid input data:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Case:
    name: str
    image: Path
    label: Path | None


@dataclass
class MSDDataset:
    root: Path
    name: str
    labels: dict[int, str]
    cases: list[Case]
    meta: dict = field(default_factory=dict)

    def case(self, name: str) -> Case:
        for c in self.cases:
            if c.name == name:
                return c
        raise KeyError(f"{self.root}: no case named {name!r}")


def _case_name(path: Path) -> str:
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
    if "labels" not in meta or "training" not in meta:
        raise DataError([f"{meta_path}: needs 'labels' and 'training' entries"])
    cases = []
    for entry in meta["training"]:
        image = root / entry["image"] if isinstance(entry, dict) else root / entry
        label = root / entry["label"] if isinstance(entry, dict) and entry.get("label") else None
        cases.append(Case(_case_name(image), image, label))
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


def check_case(case: Case, labels: dict[int, str], check_values: bool = True) -> list[str]:
    """Every problem with one image/label pair, each message starting with the file's path."""
    problems: list[str] = []
    image = _open_nifti(case.image, problems)
    if case.label is None:
        problems.append(f"{case.image}: has no label file in dataset.json")
        return problems
    label = _open_nifti(case.label, problems)
    if image is None or label is None:
        return problems
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
    return problems


def check_dataset(ds: MSDDataset, cases: list[Case] | None = None, check_values: bool = True) -> None:
    """Raise :class:`DataError` listing every problem in ``cases`` (default: all cases)."""
    problems: list[str] = []
    for case in cases if cases is not None else ds.cases:
        problems += check_case(case, ds.labels, check_values)
    if problems:
        raise DataError(problems)
