"""Does averaging several adapters' probabilities lift few-shot Dice?

At K=1 each adapter's errors depend on its optimisation (rate, order of crops) as well as on the
one support volume; averaging the softmax of adapters that learnt from the same volume removes
the first part. This scores each adapter alone and every ensemble of its first 2, 3, ... members
on the manifest's test volumes, one inference per adapter and volume.

Usage: python benchmarks/ensemble.py MANIFEST ADAPTER ADAPTER [...] [--foundation F] [--out F]
  e.g. runs/skips-k1-lr-s0/k1/manifest.json runs/skips-k1-lr-s0/k1/decoder-skips-lr0.001 \
       runs/skips-k1-lr-s0/k1/decoder-skips-lr0.002
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from background_offset import report, scored_cells

from medpeft.infer.predict import predict_probabilities
from medpeft.methods.adapter_io import load_adapter
from medpeft.models.weights import load_foundation, shipped_foundation


def ensemble_scores(manifest: dict, adapters: list[Path], foundation: Path) -> dict:
    """Mean and per-organ Dice of each adapter alone and of the ensembles of its first n."""
    copies = [load_foundation(foundation) for _ in adapters]  # load_adapter changes its model
    models = [load_adapter(a, copy) for a, copy in zip(adapters, copies)]
    found = copies[0]  # the classes and preprocessing, the same in every copy

    def labels_of(case) -> dict:
        probs = [predict_probabilities(m, case.image, found.preprocessing) for m in models]
        cells = {f"alone-{i}": p for i, p in enumerate(probs)}
        cells |= {f"first-{n}": np.mean(probs[:n], axis=0) for n in range(2, len(probs) + 1)}
        return {key: p.argmax(0).astype(np.uint8) for key, p in cells.items()}

    return scored_cells(manifest, found, labels_of)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("adapters", type=Path, nargs="+")
    ap.add_argument("--foundation", type=Path, default=shipped_foundation())
    ap.add_argument("--out", type=Path, default=None, help="JSON of every cell")
    args = ap.parse_args()
    result = ensemble_scores(json.loads(args.manifest.read_text()), args.adapters, args.foundation)
    report(result, "", args.out)


if __name__ == "__main__":
    main()
