"""Readers for the public CT collections as they lie on disk after download.

Each reader turns a folder into an :class:`MSDDataset` (cases, label map, sites) without copying
anything; :func:`read_dataset` detects the layout. Layouts:

- ``msd``: a Medical Segmentation Decathlon or nnU-Net (v1/v2) raw folder with ``dataset.json``;
  AMOS 2022 is one (its MRI cases, ids >= 500, are left out unless ``mri=True``).
- ``flare22``: ``images/FLARE22_Tr_XXXX_0000.nii.gz`` + ``labels/FLARE22_Tr_XXXX.nii.gz``.
- ``btcv``: ``[RawData/]Training/img/imgXXXX.nii.gz`` + ``.../label/labelXXXX.nii.gz``.
- ``kits19``: ``[data/]case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``; cases carry their
  Fed-KiTS19 site and train/test split where FLamby's split has them.
- ``totalsegmentator``: ``sXXXX/ct.nii.gz`` + ``sXXXX/segmentations/<structure>.nii.gz`` (one
  binary mask per structure, v1 or v2 names), or the combined variant with one multilabel
  ``sXXXX/segmentations.nii.gz`` in the v2 class order; ``meta.csv`` gives split and institute.
- ``dicom``: CT series and the DICOM SEG objects drawn on them, under any file names
  (:mod:`medpeft.data.dicom_dataset`; converted once to NIfTI in a cache).
"""
from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from medpeft.data import label_maps
from medpeft.data.dicom_dataset import looks_like_dicom, read_dicom_dataset
from medpeft.data.msd import Case, DataError, MSDDataset, load_msd
from medpeft.io import save_nifti, write_json
from medpeft.progress import Reporter


def _flare22(root: Path) -> MSDDataset:
    cases = []
    for image in sorted((root / "images").glob("FLARE22_Tr_*_0000.nii.gz")):
        name = image.name.removesuffix("_0000.nii.gz")
        cases.append(Case(name, image, root / "labels" / f"{name}.nii.gz"))
    return MSDDataset(root, "FLARE22", dict(label_maps.FLARE22), cases, {"layout": "flare22"})


def _btcv_folder(root: Path) -> Path:
    for base in (root / "RawData" / "Training", root / "Training", root):
        if (base / "img").is_dir():
            return base
    raise DataError([f"{root}: no Training/img folder (expected the BTCV RawData layout)"])


def _btcv(root: Path) -> MSDDataset:
    base = _btcv_folder(root)
    cases = []
    for image in sorted((base / "img").glob("img*.nii.gz")):
        number = image.name.removeprefix("img").removesuffix(".nii.gz")
        cases.append(Case(f"img{number}", image, base / "label" / f"label{number}.nii.gz"))
    return MSDDataset(root, "BTCV", dict(label_maps.BTCV), cases, {"layout": "btcv"})


def _kits19(root: Path) -> MSDDataset:
    base = root / "data" if (root / "data").is_dir() else root
    cases = []
    for folder in sorted(base.glob("case_*")):
        number = int(folder.name.removeprefix("case_"))
        if number >= label_maps.KITS19_LABELLED:
            continue  # the challenge's test cases have no segmentation
        site, split = label_maps.fed_kits19_site(number) or (None, None)
        cases.append(Case(folder.name, folder / "imaging.nii.gz", folder / "segmentation.nii.gz",
                          site=site, split=split))
    return MSDDataset(root, "KiTS19", dict(label_maps.KITS19), cases, {"layout": "kits19"})


def _totalseg_meta(root: Path) -> dict[str, dict]:
    path = root / "meta.csv"
    if not path.is_file():
        return {}
    text = path.read_text()
    rows = csv.DictReader(text.splitlines(), delimiter=";" if ";" in text.splitlines()[0] else ",")
    return {row["image_id"]: row for row in rows if row.get("image_id")}


def _totalseg(root: Path) -> MSDDataset:
    meta = _totalseg_meta(root)
    subjects = sorted(p for p in root.iterdir() if p.is_dir() and (p / "ct.nii.gz").exists())
    structures: set[str] = set()
    cases = []
    for subject in subjects:
        info = meta.get(subject.name, {})
        site, split = info.get("institute") or None, info.get("split") or None
        combined = subject / "segmentations.nii.gz"
        if combined.is_file():
            cases.append(Case(subject.name, subject / "ct.nii.gz", combined, site=site, split=split))
            continue
        parts = tuple((p.name.removesuffix(".nii.gz"), p)
                      for p in sorted((subject / "segmentations").glob("*.nii.gz")))
        structures.update(name for name, _ in parts)
        cases.append(Case(subject.name, subject / "ct.nii.gz", None, parts, site, split))
    v1_only = set(label_maps.TOTALSEG_V1.values()) - set(label_maps.TOTALSEG_V2.values())
    version = "v1" if structures & v1_only else "v2"
    labels = label_maps.TOTALSEG_V1 if version == "v1" else label_maps.TOTALSEG_V2
    unknown = structures - set(labels.values())
    if unknown:
        raise DataError([f"{root}: mask files {sorted(unknown)[:10]} are not TotalSegmentator "
                         f"{version} structures"])
    return MSDDataset(root, f"TotalSegmentator-{version}", dict(labels), cases,
                      {"layout": "totalsegmentator", "version": version})


def _msd(root: Path, mri: bool = False) -> MSDDataset:
    ds = load_msd(root)
    ds.meta.setdefault("layout", "msd")
    if "amos" in f"{ds.name} {root.name}".lower() and not mri:
        ids = lambda c: int(re.sub(r"\D", "", c.name) or 0)  # noqa: E731
        ds.cases = [c for c in ds.cases if ids(c) < label_maps.AMOS_FIRST_MRI]
        ds.meta["layout"] = "amos"
    return ds


def _detect(root: Path) -> str | None:
    if (root / "dataset.json").is_file():
        return "msd"
    if any((root / "images").glob("FLARE22_Tr_*_0000.nii.gz")):
        return "flare22"
    if any((b / "img").is_dir() for b in (root / "RawData" / "Training", root / "Training", root)):
        return "btcv"
    base = root / "data" if (root / "data").is_dir() else root
    if any((p / "imaging.nii.gz").exists() for p in base.glob("case_*")):
        return "kits19"
    if any((p / "ct.nii.gz").exists() for p in root.iterdir() if p.is_dir()):
        return "totalsegmentator"
    if looks_like_dicom(root):
        return "dicom"
    return None


READERS: dict[str, Callable[[Path], MSDDataset]] = {
    "msd": _msd, "amos": _msd, "flare22": _flare22, "btcv": _btcv, "kits19": _kits19,
    "totalsegmentator": _totalseg, "dicom": read_dicom_dataset}


def read_dataset(root: str | Path, layout: str | None = None, label_files: bool = False
                 ) -> MSDDataset:
    """The dataset in ``root``, read by ``layout`` (detected when None); nothing is copied.

    ``label_files=True`` (training, evaluation) refuses per-structure masks with the command that
    combines them once.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError([f"{root}: not a folder"])
    layout = layout or _detect(root)
    if layout is None:
        others = ", ".join(sorted(set(READERS) - {"msd", "amos", "dicom"}))
        raise DataError([f"{root}: no dataset layout recognised (no dataset.json, no files laid out "
                         f"as {others}, no DICOM series); see medpeft.data.layouts"])
    if layout not in READERS:
        raise DataError([f"{root}: layout {layout!r} not recognised; expected one of "
                         f"{sorted(READERS)} (see medpeft.data.layouts)"])
    ds = READERS[layout](root)
    if not ds.cases:
        raise DataError([f"{root}: no cases found in the {layout} layout"])
    if label_files and any(c.parts for c in ds.cases):
        raise DataError([f"{root}: labels are one binary mask per structure; combine them once "
                         f"with `medpeft convert {root} OUT` and use OUT"])
    return ds


def combine_parts(case: Case, labels: dict[int, str]) -> np.ndarray:
    """One label map from per-structure binary masks (values from ``labels``; later masks win)."""
    value_of = {name: value for value, name in labels.items()}
    shape = nib.load(str(case.image)).shape[:3]
    out = np.zeros(shape, dtype=np.uint8 if max(labels) < 256 else np.uint16)
    for name, path in case.parts:
        out[np.asarray(nib.load(str(path)).dataobj) > 0] = value_of[name]
    return out


def write_msd(ds: MSDDataset, out: str | Path, progress: Reporter | None = None) -> Path:
    """Write ``ds`` as an MSD folder the training pipeline reads: images linked, per-structure
    masks combined into one label map per case. Returns the folder."""
    out = Path(out)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    task = progress.add_task(f"writing {ds.name} as MSD", total=len(ds.cases)) if progress else None
    training = []
    for case in ds.cases:
        image = out / "imagesTr" / f"{case.name}.nii.gz"
        label = out / "labelsTr" / f"{case.name}.nii.gz"
        if not image.exists():
            image.symlink_to(case.image.resolve())
        if not label.exists():
            if case.parts:
                save_nifti(label, combine_parts(case, ds.labels), nib.load(str(case.image)).affine)
            elif case.label is not None:
                label.symlink_to(case.label.resolve())
        training.append({"image": f"./imagesTr/{image.name}", "label": f"./labelsTr/{label.name}"})
        if progress:
            progress.advance(task)
    write_json(out / "dataset.json", {
        "name": ds.name, "labels": {str(v): n for v, n in ds.labels.items()},
        "training": training, "source": str(ds.root), "layout": ds.meta.get("layout")})
    return out
