"""Which predicted organs a reader should check, without ground truth.

For every case and organ ``predict`` records the organ's volume and the model's confidence in it:
the mean, over the voxels predicted as the organ, of the winning class's probability. On the
phantom that confidence ranks organs by Dice (v8: Spearman 0.61-0.69 at the held-out source
sites, 0.72 zero-shot at the new site, 0.77-0.85 after adaptation with one volume; README "Organs
to review"), so an organ under ``REVIEW_BELOW`` is flagged for review, and so is an organ the
model did not find (absent from the scan's field of view, or missed). A flag asks a reader to
look; it is not a verdict: after adaptation the model is surer of some mistakes (12 of 15
failures caught at K=1). ``review.csv`` is rewritten (atomically) after each case, so an interrupted run keeps
the rows of the cases it finished, and a re-run that keeps earlier outputs keeps their rows.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from medpeft.io import atomic_path

# The highest with no false alarm at phantoms 0-1's source sites on v6 and v7b; on v8 0.70 would be,
# but it catches 2 of 35 zero-shot failures against 25 at 0.80 (benchmarks/results/review-flags-v8)
REVIEW_BELOW = 0.80
REVIEW_FILE = "review.csv"
COLUMNS = ("case", "organ", "volume_ml", "confidence", "review")
LOW, MISSING = "low confidence", "not found"


def needs_review(confidence: float | None, below: float = REVIEW_BELOW) -> str:
    """Why an organ of this confidence needs review ("" when it does not)."""
    return MISSING if confidence is None else LOW if confidence < below else ""


def voxels_and_confidence(classes_map: np.ndarray, winning: np.ndarray,
                          n: int) -> tuple[np.ndarray, list[float | None]]:
    """Per class 0..n-1 of ``classes_map``: its voxel count, and the mean winning probability
    over its voxels (None for a class with no voxel)."""
    counts = np.bincount(classes_map.ravel(), minlength=n)
    sums = np.bincount(classes_map.ravel(), weights=winning.ravel(), minlength=n)
    return counts, [float(sums[c] / counts[c]) if counts[c] else None for c in range(n)]


def organ_reviews(case: str, channels: np.ndarray, winning: np.ndarray, voxel_ml: float,
                  classes: tuple[str, ...]) -> list[dict]:
    """One row per organ of ``classes`` (channel i + 1): volume (mL), mean winning probability
    over its voxels (None when it has none) and why it needs review ("" when it does not)."""
    rows = []
    counts, confidences = voxels_and_confidence(channels, winning, len(classes) + 1)
    for c, organ in enumerate(classes, start=1):
        confidence, review = confidences[c], needs_review(confidences[c])
        rows.append({"case": case, "organ": organ, "volume_ml": round(float(counts[c]) * voxel_ml, 2),
                     # truncated: a flagged 0.79996 must not read 0.8
                     "confidence": None if confidence is None else math.floor(confidence * 1e4) / 1e4,
                     "review": review})
    return rows


def read_reviews(out_dir: str | Path) -> list[dict]:
    """The rows of ``out_dir/review.csv`` (none when it does not exist yet)."""
    path = Path(out_dir) / REVIEW_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: not a medpeft review file (columns {reader.fieldnames}, "
                             f"expected {list(COLUMNS)}); move it away or predict into another folder")
        return list(reader)


def record_reviews(out_dir: str | Path, rows: list[dict]) -> None:
    """Put one case's rows into ``review.csv``, replacing that case's earlier rows."""
    cases = {r["case"] for r in rows}
    kept = [r for r in read_reviews(out_dir) if r["case"] not in cases]
    with atomic_path(Path(out_dir) / REVIEW_FILE) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(kept + rows, key=lambda r: r["case"]))


def flagged(out_dir: str | Path, cases: set[str] | None = None) -> list[dict]:
    """The rows of ``review.csv`` that ask for review, of ``cases`` (all when None)."""
    return [r for r in read_reviews(out_dir)
            if r["review"] and (cases is None or r["case"] in cases)]
