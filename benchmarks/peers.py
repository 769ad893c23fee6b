"""Peers in one benchmark: is adapting the foundation better than training on the K scans alone?

Runs the grid of ``configs/peers-phantom.yaml`` (zero-shot; decoder-skips, medpeft adapt's default;
decoder, lora, sea-peft, blackbox-spatial, full fine-tuning; the same network from scratch; nnU-Net
v2 from scratch) seed by seed, so that an interrupted run has whole seeds first, and writes
``peers.md`` (the whole table, per-organ Dice, paired Wilcoxon tests against the best peer),
``peers.png`` (Dice vs K) and ``results.csv`` into the grid's ``out``. Finished cells are read back,
never retrained; a row that cannot run (nnU-Net not installed, crashed, out of time) is named with
its log and the other rows are still written.

Usage: python benchmarks/peers.py [CONFIG] [--seeds 0 1 2] [--shots 1 5 10] [--skip nnunet]
       [--reuse-peers OLD/results.csv]  (a new foundation: the from-scratch rows never read it;
       a new default recipe: --reuse-methods names the rows it left as they were)
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from medpeft.evaluate.peers_report import write_peers_report
from medpeft.evaluate.report import machine
from medpeft.experiments.grid import (
    NNUNET,
    load_grid,
    run_grid,
    trained_precision,
    with_precision,
    write_rows,
)
from medpeft.methods import SCRATCH
from medpeft.peers.nnunet import NnUNetBudget
from medpeft.progress import progress_bar


def finished_rows(cfg) -> list[dict]:
    """The rows of every finished cell of the grid's methods, K and seeds, each with its cell's
    training precision."""
    rows = []
    for path in sorted(Path(cfg.out).glob("*/**/scores.json")):
        cell = [r for r in json.loads(path.read_text()) if r["method"] in cfg.methods
                and (r["method"] == "zero-shot" or (r["k"] in cfg.shots and r["seed"] in cfg.seeds))]
        rows += with_precision(cell, path.parent, cell[0]["method"]) if cell else []
    return rows


# rows that never read the foundation's weights: re-measuring them on a new foundation is the same run
FOUNDATION_FREE = (SCRATCH, NNUNET)
TYPES = {"k": int, "seed": int, "dice": float, "trainable": int, "seconds": float}


def reused_rows(path: Path, cfg, methods: list[str]) -> list[dict]:
    """The rows of ``methods`` (foundation-free peers) in an earlier run's ``results.csv`` (same
    phantom, seeds and K), typed as the grid writes them."""
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["method"] in methods
                and r["method"].split("@")[0] in cfg.methods]  # scratch@VARIANT: a peer recipe
    rows = [{k: TYPES[k](v) if k in TYPES and v != "" else v for k, v in r.items()} for r in rows]
    rows = [{**r, "precision": r.get("precision") or trained_precision(None, r["method"])} for r in rows]
    rows = [r for r in rows if r["k"] in cfg.shots and r["seed"] in cfg.seeds]
    if not rows:
        raise SystemExit(f"{path}: no {' or '.join(methods)} rows for these seeds and K")
    return rows


def _reused_note(reused: list[dict], path: Path | None) -> str:
    """Which rows the report read back, and why each needed no new run."""
    if not reused:
        return "none"
    methods = sorted({r["method"] for r in reused})
    free = [m for m in methods if m.split("@")[0] in FOUNDATION_FREE]
    same = [m for m in methods if m not in free]
    return (f"{', '.join(methods)} from {path} ("
            + "; ".join(([f"{', '.join(free)}: never use the foundation"] if free else [])
                        + ([f"{', '.join(same)}: same foundation and recipe"] if same else []))
            + ")")


def _header(cfg, *, rows_read_back: str, wall: str) -> dict[str, str]:
    """The report's header: how to rerun it, on what, and each row's budget."""
    budget = NnUNetBudget(**cfg.options.get(NNUNET, {}))
    schedule = ", ".join(f"{m}: {s}" for m, s in cfg.schedules.items()) or "none"
    return {"command": "python benchmarks/peers.py " + " ".join(sys.argv[1:]),
            "machine": machine(), "dataset": ", ".join(d["path"] for d in cfg.datasets),
            "adaptation steps": f"{cfg.steps or 'medpeft adapt defaults (medpeft.methods.adapt_steps)'}"
                                f" (per-row schedules: {schedule})",
            "nnU-Net": f"{budget.epochs} epochs x {budget.iterations} iterations, its planner "
                       f"at {budget.target_spacing} mm with a {budget.memory_target_gb} GB "
                       f"memory target, fold all, CPU, no test-time mirroring",
            "rows read back": rows_read_back,
            "wall time of this invocation (s)": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/peers-phantom.yaml")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--shots", type=int, nargs="+")
    parser.add_argument("--skip", nargs="+", default=[], help="rows to leave out")
    parser.add_argument("--workers", type=int, default=1,
                        help="cells at once, one process each on its share of the cores (their "
                             "seconds are then each beside the others)")
    parser.add_argument("--report-only", action="store_true",
                        help="report the finished cells; train nothing (safe beside a run)")
    parser.add_argument("--reuse-peers", type=Path, help="an earlier run's results.csv: its "
                        "from-scratch rows are read, not retrained")
    parser.add_argument("--reuse-methods", nargs="+", default=list(FOUNDATION_FREE),
                        help="the rows --reuse-peers reads: the foundation-free peers, or rows "
                        "whose foundation and recipe have not changed since that run")
    parser.add_argument("--reuse-variant", help="keep the scratch rows read back as their own "
                        "peer row, scratch@VARIANT (an earlier recipe), beside a fresh scratch")
    args = parser.parse_args()
    cfg = load_grid(args.config)
    methods = [m for m in cfg.methods if m not in args.skip]
    cfg = replace(cfg, methods=methods, shots=args.shots or cfg.shots,
                  seeds=args.seeds or cfg.seeds)
    console, failures = Console(), []
    reuse = args.reuse_methods if args.reuse_peers else []
    reused = reused_rows(args.reuse_peers, cfg, reuse) if reuse else []
    if args.reuse_variant and SCRATCH in reuse:  # both scratch recipes are peers
        variant = f"{SCRATCH}@{args.reuse_variant}"
        reused = [{**r, "method": variant} if r["method"] == SCRATCH else r for r in reused]
        methods, reuse = methods + [variant], [m for m in reuse if m != SCRATCH]
    methods += [m for m in reuse if "@" in m and m not in methods]  # variants read back as such
    run_cfg = replace(cfg, methods=[m for m in methods if m not in reuse and "@" not in m])
    rows = list(reused)
    t0 = time.perf_counter()
    if args.report_only:
        rows += finished_rows(run_cfg)
    else:
        with progress_bar() as progress:
            for seed in cfg.seeds:  # seed-major: a partial run has every K of its first seeds
                seed_rows, _ = run_grid(replace(run_cfg, seeds=[seed]), progress, failures,
                                        workers=args.workers)
                rows += [r for r in seed_rows
                         if r["method"] != "zero-shot" or seed == cfg.seeds[0]]
    out = Path(cfg.out)
    write_rows(out / "results.csv", rows)
    wall = ("finished cells read back (--report-only)" if args.report_only
            else f"{time.perf_counter() - t0:.0f}")
    header = _header(cfg, rows_read_back=_reused_note(reused, args.reuse_peers), wall=wall)
    report, table, _ = write_peers_report(out, rows, methods, header, failures=failures)
    for t in table:
        console.print(f"{t['method']:>18} K={t['k']:>2}  Dice {t['dice']:.3f}  "
                      f"({t['seeds']} seeds)  {t['seconds']:.0f} s  {t['trainable']:,} trainable")
    for f in failures:
        console.print(f"[bold red]not run:[/] {escape(f)}", soft_wrap=True)
    console.print(f"report: {report}")


if __name__ == "__main__":
    main()
