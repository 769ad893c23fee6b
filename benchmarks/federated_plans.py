"""Federated plans compared on the phantom's three hospitals: Dice, collaborative gain, bytes.

Every plan runs the same federation (configs/federated-phantom.yaml unless --config: the same
hospitals, support and test volumes, seed, rounds and local steps) on Flower's simulation runtime;
each also trains every hospital alone through the same rounds from the same start (the local-only
baseline) and one model on all hospitals' support volumes pooled (the centralised bound). LoRA
plans run with three aggregations (svd: the average of the updates, exact when its rank fits;
fedavg: A and B averaged separately; ffa: FFA-LoRA, A frozen at the shared seed, B averaged).
Runs are cached in --out, so an interrupted comparison resumes.
Run `make demo` first (it writes the phantom).

Usage: python benchmarks/federated_plans.py [--rounds 4] [--local-steps 10]
         [--plans encoder-lora+head lora-everywhere decoder full sea-peft] [--seed 1]
         [--aggregations svd fedavg ffa] [--secure] [--report-only]
(3 seeds of the LoRA aggregations: --plans lora-everywhere --seed S --out runs/fed-s{S})
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from medpeft.federated.accounting import human
from medpeft.federated.config import load_fed_config
from medpeft.federated.plans import LORA_PLANS, PLANS
from medpeft.federated.run import federate
from medpeft.io import write_text


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
    parser.add_argument("--seed", type=int, default=None,
                        help="the federation's seed (support volumes, adapter init); default: the "
                        "config's")
    parser.add_argument("--aggregations", nargs="+", default=["svd", "fedavg", "ffa"],
                        help="for the LoRA plans (the others always average)")
    parser.add_argument("--secure", action="store_true",
                        help="every arm with secure aggregation (SecAgg+; fedavg and ffa only)")
    parser.add_argument("--server-lr", type=float, default=1.0,
                        help="FedOpt's server learning rate (aggregation fedavg or ffa)")
    parser.add_argument("--report-only", action="store_true",
                        help="tabulate the finished arms; run nothing (safe beside a run)")
    args = parser.parse_args()
    base = replace(load_fed_config(args.config), rounds=args.rounds, local_steps=args.local_steps)
    if args.seed is not None:
        base = replace(base, seed=args.seed)
    if args.secure:
        base = replace(base, secure_aggregation=True)
    base = replace(base, server_lr=args.server_lr)
    lora_modes = [m for m in args.aggregations if m != "svd"]
    arms = [(p, "svd") for p in args.plans if p not in LORA_PLANS or "svd" in args.aggregations]
    if args.secure:  # the server holds only the sum: the plain weighted mean of every tensor
        arms = [(p, "fedavg") for p in args.plans if p not in LORA_PLANS]
    arms += [(p, mode) for mode in lora_modes for p in args.plans if p in LORA_PLANS]
    title = (f"{len(base.hospitals)} hospitals, {args.rounds} rounds x {args.local_steps} local steps, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"{torch.get_num_threads()} threads")
    columns = ("plan", "aggregation", "Dice before", "Dice federated", "Dice local-only", "gain",
               "hospitals gaining", "Dice pooled", "gap to pooled", "bytes / round / hospital",
               "vs full FT", "seconds")
    rows, pooled = [], {}
    for plan, mode in arms:
        folder = Path(args.out) / (f"{plan}-{mode}{'-secagg' if args.secure else ''}"
                                   f"{f'-slr{args.server_lr:g}' if args.server_lr != 1 else ''}")
        if args.report_only and not (folder / "report.json").exists():
            continue
        # the pooled bound does not depend on the aggregation: trained once per plan
        r = run(replace(base, plan=plan, aggregation=mode, pooled=plan not in pooled), folder)
        pooled.setdefault(plan, r.get("pooled") or {})
        rows.append(plan_row(plan, mode, r, pooled[plan], args.rounds))
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in ("plan", "aggregation") else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=220).print(table)
    # the arguments as given (seed, aggregations and out included), so the line reproduces the run
    command = "python benchmarks/federated_plans.py " + shlex.join(sys.argv[1:])
    print(f"command: {command}")
    lines = [f"# Federated plans: {title}", "", f"command: `{command}`", "",
             "| " + " | ".join(columns) + " |", "|---|---|" + "---:|" * (len(columns) - 2)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    write_text(Path(args.out) / "federated-plans.md", "\n".join(lines) + "\n")


def plan_row(plan: str, mode: str, r: dict, pooled: dict, rounds: int) -> list[str]:
    """One table row: mean Dice over the hospitals, the gain over local-only, the gap to pooled."""
    mean = lambda d: statistics.mean(d.values()) if d else float("nan")  # noqa: E731
    before, fed, alone = r["dice"]["0"], r["dice"][str(rounds)], r["local_only"]
    gains = [fed[s] - alone[s] for s in fed]
    per_round = statistics.mean(row["down"] + row["up"] for row in r["bytes_per_round"]
                                if row["round"] > 0)
    return [plan, mode, f"{mean(before):.3f}", f"{mean(fed):.3f}", f"{mean(alone):.3f}",
            f"{statistics.mean(gains):+.3f}", f"{sum(g > 0 for g in gains)}/{len(gains)}",
            f"{mean(pooled):.3f}" if pooled else "-",
            f"{mean(fed) - mean(pooled):+.3f}" if pooled else "-",
            human(per_round), f"{r['bytes_total']['ratio']:.0f}x", f"{r['seconds']:.0f}"]


if __name__ == "__main__":
    main()
