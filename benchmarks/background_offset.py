"""Does lowering the background's log-probability help a few-shot adapter's Dice?

A K=1 adapter misses far more organ voxels (called background) than it invents, and the
Dice-optimal threshold of a calibrated probability lies below 0.5, so shifting uncertain voxels
from background to the organs might pay. This rescores one adapter's test volumes with the
background's log-probability lowered by each offset (and with each organ's largest component):
one inference for every offset. A constant taken off the background logit before softmax, as
`medpeft adapt` folds it into the head's bias, gives the same labels wherever a window covered.

``--overlap`` sets the sliding window's overlap (default 0.25, predict's own).

Usage: python benchmarks/background_offset.py ADAPTER MANIFEST [--offset 0 0.5 1 ...]
       [--overlap 0.25] [--out F]
  e.g. runs/lr240-s0/k1/decoder-lr0.003 runs/lr240-s0/k1/manifest.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from medpeft.data.msd import load_msd
from medpeft.data.ontology import class_mapping
from medpeft.evaluate.metrics import mean_dice, organ_means, score_case
from medpeft.infer.predict import keep_largest_components, predict_probabilities
from medpeft.io import write_json
from medpeft.methods.adapter_io import load_adapter
from medpeft.models.weights import load_foundation, shipped_foundation


def scored_cells(manifest: dict, found, labels_of) -> dict:
    """Mean and per-organ Dice of every cell over the manifest's test volumes. ``labels_of(case)``
    returns {cell: channel map} for one test case of the manifest's dataset."""
    ds = load_msd(manifest["dataset"])
    mapping = class_mapping(ds.labels, found.classes)
    c2l = np.array(mapping.channel_to_local, dtype=np.uint8)
    rows: dict[str, list] = {}
    for name in manifest["test"]:
        case = ds.case(name)
        for key, channels in labels_of(case).items():
            rows.setdefault(key, []).extend(score_case(name, c2l[channels], case.label, mapping))
    return {key: {"dice": mean_dice(r), "organs": organ_means(r)} for key, r in rows.items()}


def report(result: dict, prefix: str, out: Path | None) -> None:
    """Print each cell's mean Dice; write every cell as JSON when ``out`` is given."""
    for key, cell in result.items():
        print(f"{prefix}{key}: {cell['dice']:.3f}")
    if out:
        write_json(out, result)


def rescored(adapter: Path, manifest: dict, offsets: list[float], foundation: Path,
             overlap: float = 0.25) -> dict:
    """Mean and per-organ Dice per (offset, post-processing)."""
    found = load_foundation(foundation)
    model = load_adapter(adapter, found)

    def labels_of(case) -> dict:
        probs = predict_probabilities(model, case.image, found.preprocessing, overlap=overlap)
        logp = np.log(np.clip(probs, 1e-8, 1))
        inside = probs.sum(0) > 0.5  # voxels the window covered (outside, every class is 0)
        cells = {}
        for offset in offsets:
            shifted = logp.copy()
            shifted[0][inside] -= offset
            channels = shifted.argmax(0).astype(np.uint8)
            cells[f"{offset:g}-raw"] = channels
            cells[f"{offset:g}-largest"] = keep_largest_components(channels)
        return cells

    return scored_cells(manifest, found, labels_of)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("adapter", type=Path)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--offset", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--foundation", type=Path, default=shipped_foundation())
    ap.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap")
    ap.add_argument("--out", type=Path, default=None, help="JSON of every cell")
    args = ap.parse_args()
    result = rescored(args.adapter, json.loads(args.manifest.read_text()), args.offset,
                      args.foundation, args.overlap)
    report(result, f"{args.adapter}  offset ", args.out)


if __name__ == "__main__":
    main()
