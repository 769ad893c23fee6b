"""SEA-PEFT against every fixed-topology method at the same parameter budget, on the phantom's
new site, for K = 1 / 5 / 10 support volumes and several seeds.

Every method gets the same support volumes (chosen by the seed), the same training seed, the same
refinement / training steps (`medpeft adapt`'s default, ADAPT_STEPS = 240; SEA-PEFT searches for
120 / 160 / 200 steps first) and the same held-out test volumes. Methods with a size knob
(LoRA rank, adapter bottleneck) are grown to the largest size within the budget; the others
(BitFit, norm affine, SSF, IA3, head-only) are what they are and stay below it. Decoder
fine-tuning (30% of the weights) can be added as an over-budget reference with --method decoder.
Cells are cached in --out, so an interrupted run resumes where it stopped.

Usage: python benchmarks/sea_comparison.py [--shots 1 5 10] [--seeds 0 1 2] [--budget 0.01]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from medpeft.data.fewshot import make_split, write_manifest
from medpeft.evaluate.metrics import score_model
from medpeft.experiments.cell import adapt_and_open, cached
from medpeft.experiments.demo import phantom_setting
from medpeft.experiments.demo_config import DemoConfig
from medpeft.io import write_json
from medpeft.methods import ADAPT_STEPS, SEA, apply_method, lr_plan
from medpeft.methods.sea.loop import sea_config
from medpeft.models.backbones import build_backbone, count_parameters
from medpeft.models.weights import load_foundation
from medpeft.pipelines import AdaptRequest
from medpeft.progress import progress_bar

FIXED = ("lora", "adaptformer", "adapter", "conv-adapter", "lora+affine", "bitfit", "affine",
         "ssf", "ia3", "head")
KNOB = {"lora": "rank", "lora+affine": "rank", "adaptformer": "bottleneck",
        "adapter": "bottleneck", "conv-adapter": "bottleneck"}


def _trainable(foundation_dir: Path, method: str, options: dict) -> int:
    f = load_foundation(foundation_dir)
    model = build_backbone(f.backbone, len(f.classes) + 1)
    apply_method(model, method, options)
    return count_parameters(model, trainable_only=True)


def fit_to_budget(foundation_dir: Path, method: str, budget: int) -> dict:
    """The largest size of ``method``'s knob whose trainable count stays within ``budget``."""
    if method not in KNOB:
        return {}
    best = None
    for size in range(1, 257):
        if _trainable(foundation_dir, method, {KNOB[method]: size}) > budget:
            break
        best = size
    if best is None:
        raise ValueError(f"{method} does not fit a budget of {budget:,} parameters")
    return {KNOB[method]: best}


def run_cell(cell: Path, method: str, setting, manifest: Path, split: dict, budget: float,
             options: dict, progress, audit_sites: int | None = None, *, bf16: bool = True) -> dict:
    """Adapt and score one (K, seed, method) cell, or read its record back. ``bf16``: autocast
    where native (False: float32, to finish a table whose other cells trained in float32)."""
    def compute() -> dict:
        search = {"budget": budget, "audit_sites": audit_sites} if method == SEA else {}
        adapted = adapt_and_open(AdaptRequest(
            setting.foundation_dir, manifest, method, cell, seed=split["seed"], resume=True,
            steps=ADAPT_STEPS, lr=lr_plan(method),  # one recipe for all (SEA-PEFT's grows with K)
            options=options if method != SEA else None, bf16=bf16,
            sea={k: v for k, v in search.items() if v is not None}), progress)
        dice, _, _ = score_model(adapted.model, setting.target, split["test"], adapted.foundation,
                                 pred_dir=cell / "predictions", progress=progress,
                                 desc=f"evaluate {method} K={split['k']} seed {split['seed']}",
                                 classes=adapted.classes)
        summary = adapted.summary
        return {"method": method, "k": split["k"], "seed": split["seed"], "dice": dice,
                "trainable": adapted.trainable, "options": options, "seconds": adapted.seconds,
                "audit_share": summary["audit_seconds"] / summary["seconds"] if method == SEA
                else None, "precision": summary.get("precision", "")}
    return cached(cell / "result.json", compute)


def table(records: list[dict], n_model: int, budget: int) -> Table:
    t = Table(title=f"mean Dice (mean ± sd over seeds) at a budget of {budget:,} parameters")
    for col in ("K", "method", "size", "trainable", "%", "Dice", "sd", "seeds", "s", "audit %"):
        t.add_column(col, justify="left" if col in ("method", "size") else "right")
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        cells.setdefault((r["k"], r["method"]), []).append(r)
    for (k, method), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], -statistics.mean(
            r["dice"] for r in kv[1]))):
        dice = [r["dice"] for r in rs]
        audit = [r["audit_share"] for r in rs if r["audit_share"] is not None]
        t.add_row(str(k), method, " ".join(f"{a}={b}" for a, b in rs[0]["options"].items()) or "-",
                  f"{rs[0]['trainable']:,}", f"{100 * rs[0]['trainable'] / n_model:.2f}",
                  f"{statistics.mean(dice):.3f}",
                  f"{statistics.stdev(dice):.3f}" if len(dice) > 1 else "-", str(len(dice)),
                  f"{statistics.mean(r['seconds'] for r in rs):.0f}",
                  f"{100 * statistics.mean(audit):.1f}" if audit else "")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", type=float, default=0.01)
    ap.add_argument("--audit-sites", type=int, help="SEA-PEFT: sites toggled per audit")
    ap.add_argument("--method", action="append", help="default: sea-peft and every fixed method")
    ap.add_argument("--out", type=Path, default=Path("runs/sea-comparison"))
    ap.add_argument("--cache", type=Path, default=Path("runs/cache"))
    ap.add_argument("--no-bf16", action="store_true", help="train in float32 even where bf16 is "
                    "native (one arithmetic across a table whose other cells trained in float32)")
    args = ap.parse_args()
    console = Console()
    methods = args.method or [SEA, *FIXED]
    records = []
    t0 = time.perf_counter()
    with progress_bar() as progress:
        setting = phantom_setting(args.cache, DemoConfig(), progress, console)
        n_model = count_parameters(load_foundation(setting.foundation_dir).model)
        budget = sea_config(1, budget=args.budget).budget_params(n_model)
        options = {m: fit_to_budget(setting.foundation_dir, m, budget) for m in methods if m != SEA}
        for seed in args.seeds:  # seed-major: a partial run still covers every K
            for k in args.shots:
                split = make_split(setting.target, k, seed, DemoConfig().n_test)
                manifest = write_manifest(args.out / f"k{k}-s{seed}" / "manifest.json", split)
                for method in methods:
                    records.append(run_cell(args.out / f"k{k}-s{seed}" / method, method, setting,
                                            manifest, split, args.budget, options.get(method, {}),
                                            progress, args.audit_sites, bf16=not args.no_bf16))
                    write_json(args.out / "results.json", records)
    console.print(table(records, n_model, budget))
    console.print(f"{platform.node()}: {platform.processor() or platform.machine()}, "
                  f"{time.perf_counter() - t0:.0f} s; python benchmarks/sea_comparison.py "
                  f"--shots {' '.join(map(str, args.shots))} --seeds "
                  f"{' '.join(map(str, args.seeds))} --budget {args.budget}"
                  + (" --no-bf16" if args.no_bf16 else ""))


if __name__ == "__main__":
    main()
