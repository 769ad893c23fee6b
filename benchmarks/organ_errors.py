"""Why each organ scores what it scores: a foundation's errors on a labelled set, organ by organ.

For every organ: Dice; where its true voxels went (the organ, background or another organ);
what its predicted voxels truly were; predicted / true volume per case; and the ceiling of the
working grid (the truth resampled down to the foundation's spacing and back, linear, argmax), so
that resolution can be told apart from the model. Confusion with a neighbour, boundary errors
(background both ways) and a resolution limit each leave a different trace. ``--by-size ORGAN``
adds one row per case, smallest organ first: its true and predicted volume (mL) and its Dice, so
that an organ whose Dice follows its size can be told from one the model misreads.

Usage: python benchmarks/organ_errors.py FOUNDATION DATASET [DATASET ...] [--by-size ORGAN]
                                         [--out errors.json]
  e.g. src/medpeft/assets/phantom-foundation runs/cache/phantom-demo-s0/Task06_SourceHoldout
"""
from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from scipy.ndimage import zoom

from medpeft.data.layouts import read_dataset
from medpeft.data.ontology import class_mapping
from medpeft.infer.predict import predict_labels
from medpeft.io import write_json
from medpeft.models.weights import load_foundation


def grid_ceiling(truth: np.ndarray, zooms: np.ndarray, spacing: np.ndarray, n: int,
                 order: int = 1) -> np.ndarray:
    """The best label map a model on a ``spacing`` grid can return: each class's mask resampled
    down (linear; ``order=0``: nearest, as the training labels are) and back up (linear), then
    argmax. Linear keeps edges where they are but can lose an organ thinner than a voxel; nearest
    keeps it, shifted by up to half a voxel: neither bounds every case alone."""
    scores = []
    for c in range(n):
        small = zoom((truth == c).astype(np.float32), zooms / spacing, order=order)
        back = zoom(small, np.array(truth.shape) / np.array(small.shape), order=1)
        scores.append(back[tuple(slice(0, s) for s in truth.shape)])
    return np.argmax(np.stack(scores), 0)


def confusion(pred: np.ndarray, truth: np.ndarray, n: int) -> np.ndarray:
    """Counts[true class, predicted class]."""
    return np.bincount(truth.ravel() * n + pred.ravel(), minlength=n * n).reshape(n, n)


def dice_of(counts: np.ndarray, c: int) -> float:
    return float(2 * counts[c, c] / max(counts[c].sum() + counts[:, c].sum(), 1))


def measure(foundation_dir: str, dataset: str) -> dict:
    """Totals of the model's and the grid ceiling's confusions, per-case volume ratios, and each
    case's per-organ true volume (mL) and Dice."""
    f = load_foundation(foundation_dir)
    ds = read_dataset(dataset, label_files=True)
    mapping = class_mapping(ds.labels, f.classes)
    cases = []
    n, c2l = mapping.n_local, np.array(mapping.channel_to_local, dtype=np.uint8)
    lut = mapping.value_lut().astype(np.int64)
    model_counts, ceiling_counts, ratios = np.zeros((n, n), np.int64), np.zeros((n, n), np.int64), []
    spacing = np.array(f.preprocessing.spacing, dtype=float)
    for case in ds.cases:
        with torch.no_grad():
            pred = c2l[predict_labels(f.model.eval(), case.image, f.preprocessing)].astype(np.int64)
        label = nib.load(str(case.label))
        truth = lut[np.asarray(label.dataobj).astype(np.int64)]
        counts = confusion(pred, truth, n)
        model_counts += counts
        zooms = np.array(label.header.get_zooms()[:3], dtype=float)
        ceilings = [confusion(grid_ceiling(truth, zooms, spacing, n, order), truth, n)
                    for order in (1, 0)]
        ceiling_counts += ceilings[0]
        ratios.append([float(counts[:, c].sum() / counts[c].sum()) if counts[c].sum() else None
                       for c in range(n)])
        ml = float(np.prod(zooms)) / 1000
        cases.append({"case": f"{Path(dataset).parent.name}/{case.name}",
                      "true_ml": [float(counts[c].sum() * ml) for c in range(n)],
                      "predicted_ml": [float(counts[:, c].sum() * ml) for c in range(n)],
                      "dice": [dice_of(counts, c) for c in range(n)],
                      # the better of the linear and the nearest grid ceiling, per organ
                      "grid_ceiling": [max(dice_of(k, c) for k in ceilings) for c in range(n)]})
    return {"names": list(mapping.local_names), "model": model_counts.tolist(),
            "ceiling": ceiling_counts.tolist(), "volume_ratio_per_case": ratios, "cases": cases}


def top(shares: np.ndarray, names: list[str], skip: int) -> str:
    order = [j for j in np.argsort(shares)[::-1] if j != skip][:2]
    return ", ".join(f"{names[j]} {shares[j]:.2f}" for j in order if shares[j] >= 0.005) or "-"


def table(result: dict) -> Table:
    names, counts = result["names"], np.array(result["model"])
    ceiling = np.array(result["ceiling"])
    out = Table(title="errors per organ (Dice over all cases' voxels; shares of true / predicted voxels)")
    for column in ("organ", "Dice", "grid ceiling", "found", "missed as", "false from",
                   "pred/true volume per case"):
        out.add_column(column)
    for c in range(1, len(names)):
        if counts[c].sum() == 0:
            continue
        found = counts[c] / counts[c].sum()
        came = counts[:, c] / max(counts[:, c].sum(), 1)
        per_case = " ".join(f"{r[c]:.2f}" for r in result["volume_ratio_per_case"] if r[c] is not None)
        out.add_row(names[c], f"{dice_of(counts, c):.3f}", f"{dice_of(ceiling, c):.3f}",
                    f"{found[c]:.2f}", top(found, names, c), top(came, names, c), per_case)
    return out


def by_size(results: list[dict], organ: str) -> Table:
    """One row per case that labels ``organ``, smallest true volume first."""
    keys = ("true_ml", "predicted_ml", "dice", "grid_ceiling")
    rows = [(c["case"], *(c[k][r["names"].index(organ)] for k in keys))
            for r in results if organ in r["names"] for c in r["cases"]]
    out = Table(title=f"{organ} per case, by true volume (grid ceiling: the better of linear and "
                      "nearest)")
    for column in ("case", "true mL", "predicted mL", "Dice", "grid ceiling"):
        out.add_column(column)
    for case, true, pred, dice, ceiling in sorted(rows, key=lambda row: row[1]):
        out.add_row(case, f"{true:.1f}", f"{pred:.1f}", f"{dice:.3f}", f"{ceiling:.3f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("foundation")
    parser.add_argument("datasets", nargs="+", metavar="dataset")
    parser.add_argument("--by-size", metavar="ORGAN", help="also list ORGAN per case by its volume")
    parser.add_argument("--out", type=Path, default=None, help="write the counts as JSON")
    args = parser.parse_args()
    results = [measure(args.foundation, d) for d in args.datasets]
    console = Console(width=160)
    for dataset, result in zip(args.datasets, results):
        console.print(dataset, table(result))
    if args.by_size:
        console.print(by_size(results, args.by_size))
    if args.out:
        write_json(args.out, dict(zip(args.datasets, results)))


if __name__ == "__main__":
    main()
