"""Federated arms over seeds: mean +- sd of Dice, gain, gap to pooled, hospitals gaining.

Merges the arm folders that ``benchmarks/federated_plans.py`` wrote for each seed (one ``--out``
per seed) into one table; an arm is reported only over the seeds where it finished, and the
table says how many. Runs nothing, so it is safe beside a running benchmark.

Usage: python benchmarks/federated_seeds.py runs/fed-s0 runs/fed-s1 runs/fed-s2 --out table.md
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from medpeft.federated.accounting import human
from medpeft.io import write_text

COLUMNS = ("arm", "seeds", "federated", "local-only", "gain over local-only", "hospitals gaining",
           "pooled", "gap to pooled", "bytes / round / hospital", "vs full FT")


def arm_figures(report: dict) -> dict:
    """One seed of one arm: mean Dice over the hospitals, per-hospital gains, bytes."""
    rounds = str(report["rounds"])
    fed, alone, pooled = report["dice"][rounds], report["local_only"], report.get("pooled") or {}
    per_round = [row["down"] + row["up"] for row in report["bytes_per_round"] if row["round"] > 0]
    return {"federated": statistics.mean(fed.values()), "local": statistics.mean(alone.values()),
            "gains": {h: fed[h] - alone[h] for h in sorted(fed)},
            "pooled": statistics.mean(pooled.values()) if pooled else None,
            "bytes": statistics.mean(per_round), "ratio": report["bytes_total"]["ratio"]}


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {sd:.3f}"


def arms_by_seed(runs: list[Path]) -> dict[str, list[dict]]:
    """Each arm's figures at each seed where it finished, in the order of ``runs``."""
    arms: dict[str, list[dict]] = {}
    for run in runs:
        reports = {path.parent.name: json.loads(path.read_text())
                   for path in sorted(run.glob("*/report.json"))}
        # the pooled bound is trained once per plan and run: the plan's other arms share it
        bound = {r["plan"]: r["pooled"] for r in reports.values() if r.get("pooled")}
        for arm, report in reports.items():
            report["pooled"] = bound.get(report["plan"])
            arms.setdefault(arm, []).append(arm_figures(report))
    return arms


def gain_lines(arms: dict[str, list[dict]]) -> list[str]:
    """Per arm, each hospital's gain over training alone at each seed and the federated mean by
    seed: which hospital a mean gain hides."""
    lines = []
    for arm, seeds in sorted(arms.items()):
        hospitals = ", ".join(f"{h} " + " / ".join(f"{s['gains'][h]:+.3f}" for s in seeds)
                              for h in seeds[0]["gains"])
        means = " / ".join(f"{s['federated']:.3f}" for s in seeds)
        lines.append(f"{arm}: {hospitals}; federated by seed {means}")
    return lines


def table_rows(arms: dict[str, list[dict]]) -> list[list[str]]:
    """One row per arm of ``arms_by_seed``'s figures: means +- sd over its seeds."""
    rows = []
    for arm, seeds in sorted(arms.items()):
        gains = [g for s in seeds for g in s["gains"].values()]
        pooled = [s["pooled"] for s in seeds if s["pooled"] is not None]
        gaps = [s["federated"] - s["pooled"] for s in seeds if s["pooled"] is not None]
        rows.append([arm, str(len(seeds)), spread([s["federated"] for s in seeds]),
                     spread([s["local"] for s in seeds]),
                     f"{statistics.mean(s['federated'] - s['local'] for s in seeds):+.3f}",
                     f"{sum(g > 0 for g in gains)}/{len(gains)}",
                     spread(pooled) if pooled else "-",
                     f"{statistics.mean(gaps):+.3f}" if gaps else "-",
                     human(statistics.mean(s["bytes"] for s in seeds)),
                     f"{min(s['ratio'] for s in seeds):.0f}x"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="one federated_plans.py --out per seed")
    parser.add_argument("--out", type=Path, help="markdown file to write (default: print only)")
    args = parser.parse_args()
    missing = [str(r) for r in args.runs if not r.is_dir()]
    if missing:
        parser.error(f"no such run folder: {', '.join(missing)}")
    arms = arms_by_seed(args.runs)  # every report read once, for both the lines and the table
    rows = table_rows(arms)
    lines = ["Gains per hospital (federated - local-only) by seed, and the federated mean by seed:"]
    lines += gain_lines(arms) + [""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
