"""Per-organ Dice, HD95 and surface Dice (MONAI) on held-out volumes, in each volume's own geometry."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
from monai.networks.utils import one_hot

from medpeft.data.msd import MSDDataset, check_dataset
from medpeft.data.ontology import ClassMapping, class_mapping
from medpeft.data.transforms import Preprocessing
from medpeft.infer.predict import save_prediction, segment
from medpeft.infer.review import voxels_and_confidence
from medpeft.progress import Reporter


def dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float]:
    """Dice of classes 1..n-1 (NaN where the class is absent from the ground truth)."""
    p = one_hot(torch.as_tensor(pred, dtype=torch.long)[None, None], n_classes)
    t = one_hot(torch.as_tensor(truth, dtype=torch.long)[None, None], n_classes)
    return compute_dice(p, t, include_background=False, ignore_empty=True)[0].tolist()


def surface_scores(pred: np.ndarray, truth: np.ndarray, n_classes: int,
                   spacing: tuple[float, ...], *, tolerance_mm: float = 2.0) -> tuple[list, list]:
    """HD95 (mm) and surface Dice at ``tolerance_mm`` of classes 1..n-1 (NaN where undefined:
    the class is absent from the truth or from the prediction)."""
    p = one_hot(torch.as_tensor(pred, dtype=torch.long)[None, None], n_classes)
    t = one_hot(torch.as_tensor(truth, dtype=torch.long)[None, None], n_classes)
    present = (t[0, 1:].flatten(1).any(1) & p[0, 1:].flatten(1).any(1)).tolist()
    if not any(present):
        return [math.nan] * (n_classes - 1), [math.nan] * (n_classes - 1)
    with warnings.catch_warnings():  # empty classes: MONAI warns, we report NaN below
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p, t, percentile=95, spacing=list(spacing))[0].tolist()
        nsd = compute_surface_dice(p, t, [tolerance_mm] * (n_classes - 1),
                                   spacing=list(spacing))[0].tolist()
    return ([h if ok else math.nan for h, ok in zip(hd, present)],
            [v if ok else math.nan for v, ok in zip(nsd, present)])


def evaluate_cases(model: torch.nn.Module, ds: MSDDataset, names: list[str], mapping: ClassMapping,
                   *, pp: Preprocessing, classes: tuple[str, ...], pred_dir: Path | None = None,
                   progress: Reporter | None = None, desc: str = "evaluating", surface: bool = False,
                   tolerance_mm: float = 2.0, largest_component: bool = False) -> list[dict]:
    """Predict each case, map model channels and labels to the dataset's local classes, score;
    each row also holds the organ's confidence (``infer.review``; None where it was not found).

    ``surface`` adds HD95 and surface Dice (NSD at ``tolerance_mm``) to every row;
    ``largest_component`` post-processes each organ to its largest connected component.
    """
    cases = ds.cases_named(names)
    check_dataset(ds, cases)
    c2l = np.array(mapping.channel_to_local, dtype=np.uint8)
    task = progress.add_task(desc, total=len(cases)) if progress else None
    rows = []
    for case in cases:
        channels, winning = segment(model, case.image, pp, largest_component=largest_component)
        if pred_dir is not None:
            save_prediction(Path(pred_dir) / f"{case.name}.nii.gz", channels, case.image, classes)
        local = c2l[channels]
        scored = score_case(case.name, local, case.label, mapping, surface=surface,
                            tolerance_mm=tolerance_mm)
        # predict's confidence beside each Dice, so that its review flags can be checked here
        _, confidences = voxels_and_confidence(local, winning, mapping.n_local)
        for row, confidence in zip(scored, confidences[1:]):
            row["confidence"] = confidence
        rows += scored
        if progress:
            progress.advance(task)
    return rows


def score_case(name: str, pred: np.ndarray, label_path: str | Path, mapping: ClassMapping,
               *, surface: bool = False, tolerance_mm: float = 2.0) -> list[dict]:
    """Per-organ rows of one case: ``pred`` holds ``mapping``'s local classes in the label's
    own geometry; the label file's values are mapped to the same classes."""
    label = nib.load(str(label_path))
    truth = mapping.value_lut()[np.asarray(label.dataobj).astype(np.int64)]
    if pred.shape != truth.shape:
        raise ValueError(f"{name}: prediction shape {pred.shape} is not the label's {truth.shape}")
    scores = dice_per_class(pred, truth, mapping.n_local)
    extra = [{} for _ in scores]
    if surface:
        zooms = tuple(float(z) for z in label.header.get_zooms()[:3])
        hd, nsd = surface_scores(pred, truth, mapping.n_local, zooms, tolerance_mm=tolerance_mm)
        extra = [{"hd95": h, "nsd": n} for h, n in zip(hd, nsd)]
    return [{"case": name, "organ": organ, "dice": score, **more}
            for organ, score, more in zip(mapping.local_names[1:], scores, extra)]


def score_label_files(ds: MSDDataset, predictions: dict[str, str | Path], mapping: ClassMapping,
                      surface: bool = False, *, tolerance_mm: float = 2.0) -> list[dict]:
    """Score label maps written by another tool (a peer) exactly as ``evaluate_cases`` scores
    medpeft's own: ``predictions`` maps case names to files of ``mapping``'s local classes."""
    rows = []
    for name, path in predictions.items():
        img = nib.load(str(path))
        label = nib.load(str(ds.case(name).label))
        if not np.allclose(img.affine, label.affine, atol=1e-3):
            raise ValueError(f"{path}: not in the geometry of {ds.case(name).label}")
        pred = np.asarray(img.dataobj).astype(np.uint8)
        rows += score_case(name, pred, ds.case(name).label, mapping, surface=surface,
                           tolerance_mm=tolerance_mm)
    return rows


def mean_dice(rows: list[dict]) -> float:
    """Mean over organs of the per-organ mean over cases (NaNs skipped)."""
    means = list(organ_means(rows).values())
    return sum(means) / len(means) if means else float("nan")


def organ_means(rows: list[dict]) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for r in rows:
        if not math.isnan(r["dice"]):
            out.setdefault(r["organ"], []).append(r["dice"])
    return {k: sum(v) / len(v) for k, v in out.items()}


def score_model(model: torch.nn.Module, ds: MSDDataset, names: list[str], foundation, *,
                pred_dir: Path | None, progress: Reporter | None = None, desc: str = "evaluating",
                classes: tuple[str, ...] | None = None) -> tuple[float, dict, list]:
    """Mean Dice, per-organ means and the rows of ``model`` (segmenting ``classes``, by default
    the foundation's) on volumes ``names`` of ``ds``, with the foundation's preprocessing."""
    classes = classes or foundation.classes
    rows = evaluate_cases(model, ds, names, class_mapping(ds.labels, classes),
                          pp=foundation.preprocessing, classes=classes, pred_dir=pred_dir, progress=progress,
                          desc=desc)
    return mean_dice(rows), organ_means(rows), rows
