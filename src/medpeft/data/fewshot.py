"""K-shot support / test splits of a target dataset, by seed, written as a manifest.

The test set is fixed for a dataset (a permutation with a constant seed), independent of K and of
the experiment seed, so that every method, K and seed is scored on the same held-out volumes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medpeft.data.msd import MSDDataset
from medpeft.io import write_json

TEST_SPLIT_SEED = 20240607


def make_split(ds: MSDDataset, k: int, seed: int, n_test: int) -> dict:
    """Pick ``k`` support cases by ``seed`` from the cases outside the fixed test set."""
    names = sorted(c.name for c in ds.cases)
    if n_test < 1 or n_test >= len(names):
        raise ValueError(f"{ds.root}: cannot hold out {n_test} of {len(names)} cases for testing")
    order = np.random.default_rng(TEST_SPLIT_SEED).permutation(len(names))
    test = sorted(names[i] for i in order[:n_test])
    pool = sorted(names[i] for i in order[n_test:])
    if k < 1:
        raise ValueError(f"{ds.root}: K={k}: adaptation needs at least 1 labelled support volume")
    if k > len(pool):
        raise ValueError(f"{ds.root}: K={k} support volumes requested but only {len(pool)} "
                         f"are outside the {n_test} test volumes")
    support = sorted(np.random.default_rng(seed).choice(pool, size=k, replace=False).tolist())
    return {"dataset": str(ds.root), "k": k, "seed": seed, "support": support, "test": test}


def write_manifest(path: str | Path, split: dict) -> Path:
    write_json(path, split)
    return Path(path)


def read_manifest(path: str | Path) -> dict:
    """A manifest (``medpeft split``), checked: a ValueError naming the file and what is wrong."""
    try:
        split = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such manifest (write one with medpeft split)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a manifest (not JSON: {err})") from None
    if not isinstance(split, dict):
        raise ValueError(f"{path}: not a manifest (expected an object with dataset, support, test)")
    for key in ("dataset", "support", "test"):
        if key not in split:
            raise ValueError(f"{path}: manifest has no '{key}' entry (write one with medpeft split)")
    for key in ("support", "test"):
        names = split[key]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{path}: '{key}' must be a list of case names")
    if not split["support"]:
        raise ValueError(f"{path}: no support volume listed")
    if overlap := sorted(set(split["support"]) & set(split["test"])):
        raise ValueError(f"{path}: {', '.join(overlap)} both in support and test")
    return split
