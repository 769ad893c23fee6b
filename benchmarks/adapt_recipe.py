"""Adaptation recipe grid on the phantom's new site: how `medpeft adapt`'s defaults were chosen.

Every cell adapts one foundation model on the same K support volumes with the same seed, and is
scored on the same held-out volumes of the new site. Cells vary the method, the step budget (with
optional plateau stopping) and the intensity augmentation. Two reference rows come first: the
foundation at its own held-out source site, and zero-shot at the new site. Finished cells are read
back, so a killed grid resumes where it stopped.

Usage: python benchmarks/adapt_recipe.py --foundation DIR --method decoder --steps 80 --steps 300
       --augment light --augment phase --shots 5
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from rich.console import Console

from medpeft.data.fewshot import make_split, write_manifest
from medpeft.evaluate.metrics import score_model
from medpeft.experiments.cell import cached
from medpeft.experiments.demo import evaluate_adapter, phantom_setting
from medpeft.experiments.demo_config import DemoConfig
from medpeft.io import write_text
from medpeft.models.weights import load_foundation
from medpeft.pipelines import AdaptRequest, adapt
from medpeft.progress import progress_bar


def reference_rows(setting, test: list[str], out: Path, progress) -> list[dict]:
    """The foundation at its own held-out source site, and zero-shot at the new site."""
    foundation = load_foundation(setting.foundation_dir)
    rows = []
    for name, ds, names in (("foundation @ source holdout", setting.holdout,
                             [c.name for c in setting.holdout.cases]),
                            ("zero-shot @ new site", setting.target, test)):
        def compute(ds=ds, names=names, name=name):
            dice, organs, _ = score_model(foundation.model, ds, names, foundation, pred_dir=None,
                                          progress=progress, desc=name)
            return {"dice": dice, "organs": organs, "seconds": 0.0}
        rows.append({"row": name, "k": "-", **cached(out / f"{name.split()[0]}.json", compute)})
    return rows


def recipe_cell(setting, manifest: Path, test: list[str], cell: Path, *, method: str,
                steps: int, patience: int, augment: str, seed: int, progress) -> dict:
    """Adapt one recipe and score it on the test volumes (read back when already done)."""
    def compute() -> dict:
        t0 = time.perf_counter()
        summary = adapt(AdaptRequest(setting.foundation_dir, manifest, method, cell, steps=steps,
                                     seed=seed, patience=patience, augment=augment), progress)
        seconds = time.perf_counter() - t0
        dice, organs = evaluate_adapter(cell, setting, test, progress, desc=f"evaluate {cell.name}")
        return {"dice": dice, "organs": organs, "seconds": seconds, "steps_run": summary["steps"]}
    return cached(cell / "recipe.json", compute)


def markdown(rows: list[dict], args, organs: list[str]) -> str:
    lines = ["# Adaptation recipe on the phantom's new site", "",
             f"- command: python benchmarks/adapt_recipe.py {' '.join(args.argv)}",
             f"- machine: {platform.machine()}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}",
             f"- foundation: {args.foundation or 'the demo foundation'}; seed {args.seed}", "",
             "| row | K | mean Dice | min organ | s | " + " | ".join(organs) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(organs)]
    for r in rows:
        per = [r["organs"].get(o, float("nan")) for o in organs]
        lines.append(f"| {r['row']} | {r['k']} | {r['dice']:.3f} | {min(per):.2f} | "
                     f"{r['seconds']:.0f} | " + " | ".join(f"{v:.2f}" for v in per) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--foundation", type=Path, default=None, help="default: the demo's")
    ap.add_argument("--method", action="append", required=True)
    ap.add_argument("--steps", action="append", type=int, required=True)
    ap.add_argument("--augment", action="append", default=None)
    ap.add_argument("--patience", type=int, default=0)
    ap.add_argument("--shots", action="append", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/adapt-recipe"))
    ap.add_argument("--cache", type=Path, default=Path("runs/cache"))
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    console = Console()
    cfg = DemoConfig(seed=args.seed)
    with progress_bar() as progress:
        setting = phantom_setting(args.cache, cfg, progress, console, foundation_dir=args.foundation)
        rows = []
        for k in args.shots or [5]:
            split = make_split(setting.target, k, args.seed, cfg.n_test)
            manifest = write_manifest(args.out / f"k{k}" / "manifest.json", split)
            if not rows:
                rows += reference_rows(setting, split["test"], args.out, progress)
            for method in args.method:
                for steps in args.steps:
                    for augment in args.augment or ["light"]:
                        name = f"{method}-{steps}st-p{args.patience}-{augment}"
                        r = recipe_cell(setting, manifest, split["test"], args.out / f"k{k}" / name,
                                        method=method, steps=steps, patience=args.patience,
                                        augment=augment, seed=args.seed, progress=progress)
                        rows.append({"row": name, "k": k, **r})
    organs = list(load_foundation(setting.foundation_dir).classes)
    text = markdown(rows, args, organs)
    write_text(args.out / "adapt-recipe.md", text)
    console.print(text)


if __name__ == "__main__":
    main()
