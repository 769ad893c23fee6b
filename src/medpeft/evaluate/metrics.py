"""Per-organ Dice (MONAI) on held-out volumes, in each volume's original geometry."""
from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot

from medpeft.data.msd import MSDDataset, check_dataset
from medpeft.data.ontology import ClassMapping
from medpeft.data.transforms import Preprocessing
from medpeft.infer.predict import predict_labels, save_prediction


def dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float]:
    """Dice of classes 1..n-1 (NaN where the class is absent from the ground truth)."""
    p = one_hot(torch.as_tensor(pred, dtype=torch.long)[None, None], n_classes)
    t = one_hot(torch.as_tensor(truth, dtype=torch.long)[None, None], n_classes)
    return compute_dice(p, t, include_background=False, ignore_empty=True)[0].tolist()


def evaluate_cases(model: torch.nn.Module, ds: MSDDataset, names: list[str], mapping: ClassMapping,
                   pp: Preprocessing, classes: tuple[str, ...], pred_dir: Path | None = None,
                   progress=None, desc: str = "evaluating") -> list[dict]:
    """Predict each case, map model channels and labels to the dataset's local classes, score."""
    cases = [ds.case(n) for n in names]
    check_dataset(ds, cases)
    c2l = np.array(mapping.channel_to_local, dtype=np.uint8)
    v2l = np.zeros(max(mapping.value_to_local) + 1, dtype=np.uint8)
    for value, local in mapping.value_to_local.items():
        v2l[value] = local
    task = progress.add_task(desc, total=len(cases)) if progress else None
    rows = []
    for case in cases:
        channels = predict_labels(model, case.image, pp)
        if pred_dir is not None:
            save_prediction(Path(pred_dir) / f"{case.name}.nii.gz", channels, case.image, classes)
        truth = v2l[np.asarray(nib.load(str(case.label)).dataobj).astype(np.int64)]
        scores = dice_per_class(c2l[channels], truth, mapping.n_local)
        for organ, score in zip(mapping.local_names[1:], scores):
            rows.append({"case": case.name, "organ": organ, "dice": score})
        if progress:
            progress.advance(task)
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
