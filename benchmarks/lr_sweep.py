"""Learning-rate sweep of adaptation methods on the phantom's new site: how the defaults were chosen.

Each (method, rate) cell adapts the demo's foundation model on the same K support volumes with the
same seed and reports mean Dice on the same held-out volumes. The rate applies to the method's
own group (its adapter kinds, or the unfrozen parts); the head keeps its default rate. The default
rate is marked with '*'.

Usage: python benchmarks/lr_sweep.py --method lora --method adaptformer --rate 3e-3 --rate 1e-2
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from medpeft.data.fewshot import make_split, write_manifest
from medpeft.experiments.cell import cached
from medpeft.experiments.demo import evaluate_adapter, phantom_setting
from medpeft.experiments.demo_config import DemoConfig
from medpeft.methods import lr_plan
from medpeft.pipelines import AdaptRequest, adapt
from medpeft.progress import progress_bar


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--foundation", type=Path, default=None,
                    help="default: the demo's (seeds other than 0 pre-train their own)")
    ap.add_argument("--method", action="append", required=True)
    ap.add_argument("--rate", action="append", type=float, required=True)
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/lr-sweep"))
    ap.add_argument("--cache", type=Path, default=Path("runs/cache"))
    args = ap.parse_args()
    console = Console()
    cfg = DemoConfig(seed=args.seed)
    rows = []
    with progress_bar() as progress:
        setting = phantom_setting(args.cache, cfg, progress, console,
                                  foundation_dir=args.foundation)
        split = make_split(setting.target, args.shots, args.seed, cfg.n_test)
        manifest = write_manifest(args.out / f"k{args.shots}" / "manifest.json", split)
        for method in args.method:
            groups = [g for g in lr_plan(method) if g != "head" or method == "head"]
            for rate in args.rate:
                cell = args.out / f"k{args.shots}" / f"{method}-lr{rate:g}"
                request = AdaptRequest(setting.foundation_dir, manifest, method, cell,
                                       steps=args.steps, lr={g: rate for g in groups},
                                       seed=args.seed, resume=True)  # an interrupted cell goes on

                def compute(request=request, method=method, rate=rate) -> dict:
                    t0 = time.perf_counter()
                    adapt(request, progress)
                    seconds = time.perf_counter() - t0
                    dice, _ = evaluate_adapter(request.out, setting, split["test"], progress,
                                               desc=f"evaluate {method} lr {rate:g}")
                    return {"dice": dice, "seconds": seconds}
                rows.append((method, rate, cached(cell / "sweep.json", compute)))
    table = Table(title=f"mean Dice at K={args.shots}, {args.steps} steps, seed {args.seed}")
    for col in ("method", "rate", "Dice", "s"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for method, rate, r in rows:
        plan = lr_plan(method, args.shots)
        default = any(plan[g] == rate for g in plan if g != "head")
        table.add_row(method, f"{rate:g}{'*' if default else ''}", f"{r['dice']:.3f}",
                      f"{r['seconds']:.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
