"""Do `predict`'s review flags catch the organs it got wrong? Measured against ground truth.

Each model segments labelled volumes through `medpeft evaluate`'s own code
(`evaluate.metrics.evaluate_cases`: MONAI's Dice, and `predict`'s confidence for every organ);
every (case, organ) that the labels contain is one row. A failure is an organ with Dice under 0.5
(`evaluate.review_check`). For each confidence threshold the table gives how many failures the
flag catches and how many good organs it flags as well (false alarms), per setting, and
Spearman's rank correlation of confidence with Dice (an organ not found counts as confidence 0).

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
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr

from medpeft.data.layouts import read_dataset
from medpeft.data.ontology import class_mapping
from medpeft.evaluate.metrics import evaluate_cases
from medpeft.evaluate.review_check import FAILED_BELOW, review_check
from medpeft.io import write_json
from medpeft.methods.adapter_io import load_adapter
from medpeft.models.weights import load_foundation, shipped_foundation

THRESHOLDS = (0.70, 0.75, 0.80, 0.85, 0.90)


def scored_rows(foundation: Path, dataset: str, adapter: str | None) -> list[dict]:
    """Dice and confidence of every (case, organ) the dataset's labels contain."""
    f = load_foundation(foundation)
    ds = read_dataset(dataset, label_files=True)
    names = [c.name for c in ds.cases]
    if adapter:  # an adapter folder (loaded), or a manifest.json: its test volumes only
        manifest = Path(adapter) if adapter.endswith(".json") else Path(adapter) / "adapter_config.json"
        if not adapter.endswith(".json"):
            load_adapter(adapter, f)
        config = json.loads(manifest.read_text())
        names = [n for n in names if n in set(config.get("manifest", config)["test"])]
    rows = evaluate_cases(f.model.eval(), ds, names, class_mapping(ds.labels, f.classes),
                          pp=f.preprocessing, classes=f.classes)
    return [r for r in rows if not math.isnan(r["dice"])]


def summary(rows: list[dict]) -> dict:
    confidence = [r["confidence"] or 0.0 for r in rows]
    return {"spearman": float(spearmanr(confidence, [r["dice"] for r in rows])[0]),
            **{f"{t:.2f}": review_check(rows, below=t) for t in THRESHOLDS}}


def table(results: dict) -> Table:
    out = Table(title=f"review flags (confidence under t) against failures (Dice < {FAILED_BELOW})")
    for column in ("setting", "organs", "failed", "Spearman", *[f"t = {t:.2f}" for t in THRESHOLDS]):
        out.add_column(column)
    for setting, s in results.items():
        checks = [s[f"{t:.2f}"] for t in THRESHOLDS]
        cells = [f"{c['caught']}/{c['failed']} caught, {c['false_alarms']}/{c['organs'] - c['failed']} false"
                 for c in checks]
        out.add_row(setting, str(checks[0]["organs"]), str(checks[0]["failed"]), f"{s['spearman']:.2f}",
                    *cells)
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
