"""Federated plans compared on the phantom's three hospitals: Dice, collaborative gain, bytes.

Every plan runs the same federation (configs/federated-phantom.yaml unless --config: the same
sites, support and test volumes, seed, rounds and local steps) on Flower's simulation runtime;
each also trains every site alone for rounds x local steps from the same start (the local-only
baseline). LoRA plans run with both aggregations (svd: exact average of the updates; fedavg: A
and B averaged separately). Runs are cached in --out, so an interrupted comparison resumes.
Run `make demo` first (it writes the phantom).

Usage: python benchmarks/federated_plans.py [--rounds 4] [--local-steps 10]
         [--plans encoder-lora+head lora-everywhere decoder full sea-peft]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from medpeft.federated.accounting import human
from medpeft.federated.config import load_fed_config
from medpeft.federated.plans import PLANS
from medpeft.federated.run import federate

LORA_PLANS = ("encoder-lora+head", "lora-everywhere")


def run(cfg, out: Path) -> dict:
    report_path = out / "report.json"
    if report_path.exists():
        return json.loads(report_path.read_text())
    return federate(replace(cfg, out=str(out)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/federated-phantom.yaml")
    parser.add_argument("--plans", nargs="+", default=list(PLANS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-steps", type=int, default=10)
    parser.add_argument("--out", default="runs/bench-federated-plans")
    args = parser.parse_args()
    base = replace(load_fed_config(args.config), rounds=args.rounds, local_steps=args.local_steps)
    arms = [(p, "svd") for p in args.plans] + [(p, "fedavg") for p in args.plans if p in LORA_PLANS]
    table = Table(title=f"{len(base.sites)} sites, {args.rounds} rounds x {args.local_steps} local "
                        f"steps, {platform.processor() or platform.machine()}, "
                        f"{os.cpu_count()} cores")
    for col in ("plan", "aggregation", "Dice before", "Dice federated", "Dice local-only",
                "gain", "sites gaining", "bytes / round / site", "vs full FT", "seconds"):
        table.add_column(col, justify="left" if col in ("plan", "aggregation") else "right")
    for plan, mode in arms:
        r = run(replace(base, plan=plan, aggregation=mode), Path(args.out) / f"{plan}-{mode}")
        before = r["dice"]["0"]
        fed = r["dice"][str(args.rounds)]
        alone = r["local_only"]
        mean = lambda d: statistics.mean(d.values())  # noqa: E731
        gains = [fed[s] - alone[s] for s in fed]
        rounds = [row for row in r["bytes_per_round"] if row["round"] > 0]
        per_round = statistics.mean(row["down"] + row["up"] for row in rounds)
        table.add_row(plan, mode, f"{mean(before):.3f}", f"{mean(fed):.3f}", f"{mean(alone):.3f}",
                      f"{statistics.mean(gains):+.3f}", f"{sum(g > 0 for g in gains)}/{len(gains)}",
                      human(per_round), f"{r['bytes_total']['ratio']:.0f}x", f"{r['seconds']:.0f}")
    Console(width=200).print(table)
    print(f"command: python benchmarks/federated_plans.py --rounds {args.rounds} "
          f"--local-steps {args.local_steps} --plans {' '.join(args.plans)}")


if __name__ == "__main__":
    main()
