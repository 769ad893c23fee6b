"""Do `predict`'s review flags catch the organs it got wrong? Measured against ground truth.

Each model segments labelled volumes with `medpeft predict`'s own code (`infer.predict.segment`,
`infer.review.organ_reviews`); every (case, organ) that the labels contain is one row: its Dice
and its confidence. An organ with Dice under 0.5 is a failure a reader should be sent to. For
each confidence threshold the table gives how many failures the flag catches and how many good
organs it flags as well (false alarms), per setting, and Spearman's rank correlation of
confidence with Dice.

Usage: python benchmarks/review_flags.py SETTING=DATASET[@ADAPTER|@MANIFEST] [...] [--foundation F]
                                         [--out review-flags.json]
  e.g. source-0=runs/cache/phantom-demo-s0/Task06_SourceHoldout \\
       k1=runs/cache/phantom-demo-s0/Task10_NewSite@runs/demo/k1/decoder-skips
  With an adapter (or a manifest.json, the foundation alone), only the manifest's test volumes
  are scored, never its support volumes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr

from medpeft.data.layouts import read_dataset
from medpeft.data.ontology import class_mapping
from medpeft.infer.predict import segment, voxel_ml
from medpeft.infer.review import organ_reviews
from medpeft.io import write_json
from medpeft.methods.adapter_io import load_adapter
from medpeft.models.weights import load_foundation, shipped_foundation

THRESHOLDS = (0.70, 0.75, 0.80, 0.85, 0.90)
FAILED_BELOW = 0.5


def scored_rows(foundation: Path, dataset: str, adapter: str | None) -> list[dict]:
    """(case, organ, Dice, confidence) for every organ the dataset's labels contain."""
    f = load_foundation(foundation)
    cases = read_dataset(dataset, label_files=True).cases
    if adapter:  # an adapter folder (loaded), or a manifest.json: its test volumes only
        manifest = Path(adapter) if adapter.endswith(".json") else Path(adapter) / "adapter_config.json"
        if not adapter.endswith(".json"):
            load_adapter(adapter, f)
        config = json.loads(manifest.read_text())
        test = set(config.get("manifest", config)["test"])
        cases = [c for c in cases if c.name in test]
    ds = read_dataset(dataset, label_files=True)
    mapping = class_mapping(ds.labels, f.classes)
    lut, names = mapping.value_lut().astype(np.int64), list(mapping.local_names)
    rows = []
    for case in cases:
        channels, winning = segment(f.model.eval(), case.image, f.preprocessing, bf16=True)
        truth = lut[np.asarray(nib.load(str(case.label)).dataobj).astype(np.int64)]
        for review in organ_reviews(case.name, channels, winning, voxel_ml(case.image), f.classes):
            if review["organ"] not in names or not (truth == names.index(review["organ"])).any():
                continue
            organ = truth == names.index(review["organ"])
            pred = channels == f.classes.index(review["organ"]) + 1
            dice = 2 * float((pred & organ).sum()) / float(pred.sum() + organ.sum())
            rows.append({**review, "dice": dice, "confidence": review["confidence"] or 0.0})
    return rows


def summary(rows: list[dict]) -> dict:
    failed = np.array([r["dice"] < FAILED_BELOW for r in rows])
    confidence = np.array([r["confidence"] for r in rows])
    out = {"organs": len(rows), "failed": int(failed.sum()),
           "spearman": float(spearmanr(confidence, [r["dice"] for r in rows])[0])}
    for t in THRESHOLDS:
        flag = confidence < t
        out[f"{t:.2f}"] = {"caught": int((flag & failed).sum()), "false_alarms": int((flag & ~failed).sum())}
    return out


def table(results: dict) -> Table:
    out = Table(title=f"review flags (confidence under t) against failures (Dice < {FAILED_BELOW})")
    for column in ("setting", "organs", "failed", "Spearman", *[f"t = {t:.2f}" for t in THRESHOLDS]):
        out.add_column(column)
    for setting, s in results.items():
        cells = [f"{s[f'{t:.2f}']['caught']}/{s['failed']} caught, "
                 f"{s[f'{t:.2f}']['false_alarms']}/{s['organs'] - s['failed']} false" for t in THRESHOLDS]
        out.add_row(setting, str(s["organs"]), str(s["failed"]), f"{s['spearman']:.2f}", *cells)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("settings", nargs="+", metavar="SETTING=DATASET[@ADAPTER|@MANIFEST]")
    parser.add_argument("--foundation", type=Path, default=shipped_foundation())
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows, results = {}, {}
    for item in args.settings:
        setting, target = item.split("=", 1)
        dataset, _, adapter = target.partition("@")
        rows[setting] = scored_rows(args.foundation, dataset, adapter or None)
        results[setting] = summary(rows[setting])
    Console(width=200).print(table(results))
    if args.out:
        write_json(args.out, {"summary": results, "rows": rows})


if __name__ == "__main__":
    main()
