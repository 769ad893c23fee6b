"""Adapting on smaller crops than the foundation's ROI: does it keep Dice for less time?

A step's cost follows the crop's voxels, and on a CPU without native bf16 a v6 (64^3) adaptation
step takes 1.5 s on 2 cores. Each cell adapts `medpeft adapt`'s default method (its default steps,
rates and background offset) on crops of ``--train-patch``, then scores the adapter with sliding
windows of the foundation's own ROI and of the training ROI, on phantom ``--seed``'s new site
(split seed = phantom seed, as ``lr_sweep.py``). Compare with the same cells at the foundation's
ROI (``--train-patch`` equal to it).

Usage: python benchmarks/train_roi.py --seed 1 --shots 1 --train-patch 64 64 32 [--out runs/train-roi]
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from rich.console import Console

from medpeft.data.fewshot import make_split, write_manifest
from medpeft.experiments.cell import cached
from medpeft.experiments.demo import evaluate_adapter, phantom_setting
from medpeft.experiments.demo_config import DemoConfig
from medpeft.io import write_json
from medpeft.methods import DEFAULT_METHOD
from medpeft.models.weights import shipped_foundation
from medpeft.pipelines import AdaptRequest, adapt
from medpeft.progress import progress_bar


def foundation_copy(source: Path, out: Path, *, crop: tuple[int, int, int],
                    windows: tuple[int, int, int] | None = None) -> Path:
    """A copy of foundation ``source`` (the same weights) that adapts on ``crop`` through
    foundation.json's ``adaptation.crop``, as the shipped one does, and predicts with ``windows``
    (default: its own ROI)."""
    if not (out / "foundation.json").exists():
        shutil.copytree(source, out, dirs_exist_ok=True)
        meta = json.loads((out / "foundation.json").read_text())
        meta["adaptation"] = {"crop": list(crop)}
        if windows:
            meta["preprocessing"]["patch"] = list(windows)
        write_json(out / "foundation.json", meta)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--train-patch", type=int, nargs=3, required=True)
    ap.add_argument("--foundation", type=Path, default=None, help="default: the shipped one")
    ap.add_argument("--out", type=Path, default=Path("runs/train-roi"))
    ap.add_argument("--cache", type=Path, default=Path("runs/cache"))
    args = ap.parse_args()
    source = args.foundation or shipped_foundation()
    patch = tuple(args.train_patch)
    name = "x".join(map(str, patch))
    cell = args.out / f"s{args.seed}-k{args.shots}-{name}"
    trained_at = foundation_copy(source, args.out / f"adapts-{name}", crop=patch)
    small_windows = foundation_copy(source, args.out / f"windows-{name}", crop=patch, windows=patch)
    cfg = DemoConfig(seed=args.seed)
    with progress_bar() as progress:
        setting = phantom_setting(args.cache, cfg, progress, Console(), foundation_dir=trained_at)
        at_train_roi = phantom_setting(args.cache, cfg, progress, Console(),
                                       foundation_dir=small_windows)
        split = make_split(setting.target, args.shots, args.seed, cfg.n_test)
        manifest = write_manifest(cell / "manifest.json", split)

        def compute() -> dict:
            t0 = time.perf_counter()
            adapt(AdaptRequest(trained_at, manifest, DEFAULT_METHOD, cell / "adapter", seed=args.seed),
                  progress)
            seconds = time.perf_counter() - t0
            own, _ = evaluate_adapter(cell / "adapter", setting, split["test"], progress,
                                      desc="windows of the foundation's ROI")
            small, _ = evaluate_adapter(cell / "adapter", at_train_roi, split["test"], progress,
                                        desc="windows of the training ROI")
            return {"seed": args.seed, "shots": args.shots, "train_patch": list(patch),
                    "dice_foundation_roi": own, "dice_train_roi": small, "seconds": seconds}
        result = cached(cell / "result.json", compute)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
