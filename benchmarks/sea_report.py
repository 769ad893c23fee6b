"""Gather the finished cells of one or more `benchmarks/sea_comparison.py` runs into one table per
K: method, trainable parameters, Dice per seed, mean ± sd, SEA-PEFT's lead over the best fixed
method at each seed. `sea_comparison.py` rewrites its own results.json with only the cells of the
invocation, so runs split over seeds or folders are merged here, from each cell's result.json.

Usage: python benchmarks/sea_report.py runs/sea-comparison-v5 runs/sea-comparison-v5-k10 --k 1 \
       --out benchmarks/results/sea-comparison-v5-k1
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from medpeft.evaluate.peers_report import precision_text
from medpeft.experiments.grid import trained_precision
from medpeft.io import write_json, write_text
from medpeft.methods import SEA


def gather(folders: list[Path], k: int) -> list[dict]:
    """Every finished cell record at ``k`` under ``folders`` (a cell run twice counts once)."""
    records: dict[tuple[str, int], dict] = {}
    for folder in folders:
        for path in sorted(folder.glob(f"k{k}-s*/*/result.json")):
            record = json.loads(path.read_text())
            record["precision"] = record.get("precision") or trained_precision(
                path.parent, record["method"])
            records.setdefault((record["method"], record["seed"]), record)
    return sorted(records.values(), key=lambda r: (r["method"], r["seed"]))


def lead_per_seed(records: list[dict]) -> dict[int, float]:
    """SEA-PEFT's Dice minus the best fixed method's, at each seed where every method of the
    table has finished (a seed still running would compare SEA-PEFT with a few weak methods)."""
    methods = {r["method"] for r in records}
    by_seed: dict[int, dict[str, float]] = {}
    for r in records:
        by_seed.setdefault(r["seed"], {})[r["method"]] = r["dice"]
    return {s: d[SEA] - max(v for m, v in d.items() if m != SEA)
            for s, d in sorted(by_seed.items()) if SEA in d and len(d) > 1 and set(d) == methods}


def markdown(records: list[dict], k: int) -> str:
    seeds = sorted({r["seed"] for r in records})
    rows: dict[str, list[dict]] = {}
    for r in records:
        rows.setdefault(r["method"], []).append(r)
    lines = [f"| method | trainable | {' | '.join(f'seed {s}' for s in seeds)} | mean ± sd |",
             "|---|---:|" + "---:|" * (len(seeds) + 1)]
    for method, rs in sorted(rows.items(), key=lambda kv: -statistics.mean(r["dice"] for r in kv[1])):
        dice = {r["seed"]: r["dice"] for r in rs}
        sd = f"{statistics.stdev(dice.values()):.3f}" if len(dice) > 1 else "-"
        trainable = ", ".join(f"{t:,}" for t in sorted({r["trainable"] for r in rs}))
        name = "**SEA-PEFT**" if method == SEA else method
        lines.append(f"| {name} | {trainable} | "
                     + " | ".join(f"{dice[s]:.3f}" if s in dice else "-" for s in seeds)
                     + f" | {statistics.mean(dice.values()):.3f} ± {sd} |")
    lead = lead_per_seed(records)
    audit = [r["audit_share"] for r in records if r["method"] == SEA and r["audit_share"]]
    lines += ["", f"K={k}. SEA-PEFT minus the best fixed method, per seed: "
              + (", ".join(f"seed {s} {v:+.3f}" for s, v in lead.items()) or "not run") + "."]
    lines.append(f"Trained in (per cell): {precision_text(r['precision'] for r in records)}.")
    if audit:
        lines.append("SEA-PEFT's audit share of its cell: "
                     + ", ".join(f"{100 * a:.1f}%" for a in audit) + ".")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="--out folders of sea_comparison.py")
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.md and OUT.json")
    args = ap.parse_args()
    records = gather(args.folders, args.k)
    if not records:
        sys.exit(f"no finished K={args.k} cells under {', '.join(map(str, args.folders))}")
    write_json(args.out.with_suffix(".json"), records)
    text = markdown(records, args.k)
    write_text(args.out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
