"""The demo's federated section: three phantom hospitals adapt one affine adapter together.

Each hospital holds a disjoint third of the new hospital's volumes (K labelled + test volumes each).
A finished federation (same settings) is reused, so a re-run of the demo does not redo it.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from rich.table import Table

from medpeft.federated.accounting import human
from medpeft.federated.config import FedConfig
from medpeft.federated.run import federate
from medpeft.io import write_text

HOSPITALS = 3


def demo_federation_config(target: Path, foundation: Path, out: Path, rounds: int, *,
                           plan: str | None, steps: int | None, server_lr: float | None,
                           seed: int, k: int = 2, n_test: int = 2) -> FedConfig:
    """`medpeft federate`'s aggregation on three hospitals, with ``plan``, ``steps`` local steps
    a round and FedOpt's ``server_lr`` (None: federate's defaults); evaluated before the first
    round and after the last only, the two columns the demo's table shows."""
    hospitals = [{"dataset": str(target), "k": k, "n_test": n_test, "part": [i, HOSPITALS],
              "name": f"hospital-{i + 1}"} for i in range(HOSPITALS)]
    # the pooled bound costs the demo a minute it does not have: benchmarks/federated_plans.py
    cfg = FedConfig(foundation=str(foundation), hospitals=hospitals, out=str(out), rounds=rounds,
                    seed=seed, evaluate_every=rounds, pooled=False)
    chosen = {"plan": plan, "local_steps": steps, "server_lr": server_lr}
    given = {name: value for name, value in chosen.items() if value is not None}
    return replace(cfg, **given).check().resolved()


# how the federation ran, not what it computed: a finished run is reused whatever these were
HOW_IT_RAN = ("simulation_workers",)


def _what_it_computes(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in HOW_IT_RAN}


def demo_federation(cfg: FedConfig) -> dict:
    """Run (or reuse) the federation; returns its report."""
    out = Path(cfg.out)
    report, settings = out / "report.json", out / "demo-settings.json"
    if report.exists() and settings.exists() and \
            _what_it_computes(json.loads(settings.read_text())) == _what_it_computes(cfg.to_dict()):
        return json.loads(report.read_text())
    result = federate(cfg)
    write_text(settings, json.dumps(cfg.to_dict()))  # atomic: the mark of a finished run
    return result


def federation_table(report: dict, cfg: FedConfig) -> Table:
    """Per-hospital Dice before, federated, local-only and pooled (where run), with the bytes
    in the caption; short headers, so it reads at 80 columns."""
    totals = report["bytes_total"]
    table = Table(title=f"federated {cfg.plan} ({cfg.aggregation}): {len(cfg.hospitals)} hospitals, "
                        f"{cfg.rounds} round{'s' * (cfg.rounds != 1)} x {cfg.local_steps} local steps",
                  caption=f"{human(totals['bytes'])} on the wire vs "
                          f"{human(totals['full_ft_bytes'])} for full fine-tuning "
                          f"({totals['ratio']:.0f}x less)")
    pooled, alone = report.get("pooled") or {}, report.get("local_only") or {}
    # an arm that did not run (baseline: false, pooled: false) gets no column, never a "nan"
    columns = ["hospital", "before", "federated", *(["alone", "gain"] if alone else []),
               *(["pooled"] if pooled else [])]
    for col in columns:
        table.add_column(col, justify="left" if col == "hospital" else "right", no_wrap=True)
    dice = report["dice"]
    for hospital in sorted(dice["0"]):
        fed = dice[str(cfg.rounds)][hospital]
        row = [hospital, f"{dice['0'][hospital]:.3f}", f"{fed:.3f}"]
        if alone:
            mine = alone.get(hospital, float("nan"))
            row += [f"{mine:.3f}", f"{fed - mine:+.3f}"]
        table.add_row(*row, *([f"{pooled.get(hospital, float('nan')):.3f}"] if pooled else []))
    return table
