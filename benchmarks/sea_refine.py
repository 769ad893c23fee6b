"""SEA-PEFT's refine recipe by K: do its steps and rates gain from growing with K, as decoder's do?

One search per (K, seed) on the phantom's new site (`medpeft adapt --method sea-peft`'s defaults);
its chosen sites are then refined from the foundation with each (steps, rate multiplier) cell, the
multiplier applying to every adapter kind's rate (the head keeps its own). Every cell is scored on
the same 6 test volumes. Finished cells are read back.

Usage: python benchmarks/sea_refine.py --foundation src/medpeft/assets/phantom-foundation \
       --shots 10 --seed 0 --cell 240x1 --cell 960x1 --cell 960x4
"""
from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

from rich.console import Console

from medpeft.data.fewshot import make_split, write_manifest
from medpeft.experiments.cell import cached
from medpeft.experiments.demo import phantom_setting, trained_and_scored
from medpeft.experiments.demo_config import DemoConfig
from medpeft.methods import SEA, lr_plan
from medpeft.pipelines import AdaptRequest, adapt
from medpeft.pipelines.tune import adapt as refine
from medpeft.progress import progress_bar


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--foundation", type=Path, required=True)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cell", action="append", required=True, help="STEPSxMULTIPLIER, e.g. 960x4")
    ap.add_argument("--out", type=Path, default=Path("runs/sea-refine"))
    ap.add_argument("--cache", type=Path, default=Path("runs/cache"))
    args = ap.parse_args()
    cfg = DemoConfig(seed=args.seed)
    out = args.out / f"k{args.shots}-s{args.seed}"
    rows = []
    with progress_bar() as progress:
        setting = phantom_setting(args.cache, cfg, progress, Console(), foundation_dir=args.foundation)
        split = make_split(setting.target, args.shots, args.seed, cfg.n_test)
        manifest = write_manifest(out / "manifest.json", split)
        searched = out / "searched"

        def search() -> dict:
            t0 = time.perf_counter()
            adapt(AdaptRequest(args.foundation, manifest, SEA, searched, seed=args.seed, resume=True),
                  progress)
            return {"seconds": time.perf_counter() - t0}
        cached(searched / "done.json", search)
        sites = json.loads((searched / "search" / "outcome.json").read_text())["sites"]
        for spec in args.cell:
            steps, mult = (float(x) for x in spec.split("x"))
            cell = out / f"refine-{spec}"
            rates = {g: r * mult for g, r in lr_plan(SEA).items() if g != "head"}
            train = partial(refine, args.foundation, manifest, SEA, cell, options={"sites": sites},
                            steps=int(steps), lr=rates, seed=args.seed, progress=progress)
            compute = partial(trained_and_scored, cell, setting, split["test"], train, progress,
                              desc=f"evaluate {spec}")
            rows.append((spec, cached(cell / "result.json", compute)))
    for spec, r in rows:
        print(f"K={args.shots} seed {args.seed} {spec}: {r['dice']:.3f} ({r['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
