"""``medpeft federate``: a federation on Flower's simulation runtime, then its report.

Flower runs offline here: telemetry and Ray usage stats are off and ``FLWR_HOME`` is a folder of
the run. After the rounds, each hospital also trains alone through the same rounds of local steps from the
same start (what collaboration gained over local-only training), and one model trains on all
hospitals' support volumes pooled (the centralised bound the federation approaches).
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

from medpeft.federated.accounting import human
from medpeft.federated.config import HOSPITALS, FedConfig, hospital_name, write_hospital_manifests
from medpeft.federated.flows import flow_for
from medpeft.io import write_json, write_text, write_yaml
from medpeft.startup import skip_unused_optional_packages

# the Ray worker set-up hook, by its dotted path (derived: a rename cannot leave it dangling)
SKIP_UNUSED = f"{skip_unused_optional_packages.__module__}.{skip_unused_optional_packages.__qualname__}"
OFFLINE_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_DEDUP_LOGS": "0"}
# Ray lowers its workers' priority by 15 (its `worker_niceness`), and the hospitals train in those
# workers: beside any other job at the command's own priority they got a few % of a core. At 0
# they run at the priority of the command that started them.
RAY_WORKER_PRIORITY = {"RAY_worker_niceness": "0"}


def offline_env(out: Path) -> dict[str, str]:
    """Environment for Flower without network access and without touching ``~/.flwr``."""
    return {**OFFLINE_ENV, "FLWR_HOME": str((out / "flwr-home").resolve())}


def simulate(cfg: FedConfig, client_app=None) -> None:
    """Run the federation in-process on Flower's simulation runtime (CPU only); ``client_app``
    replaces the standard hospital app (e.g. one wrapped with Flower mods)."""
    import ray
    from flwr.simulation import run_simulation

    from medpeft.federated.app import client_app_for, server_app_for
    os.environ.update({**offline_env(Path(cfg.out)), **RAY_WORKER_PRIORITY})
    workers = cfg.simulation_workers or max(1, min(len(cfg.hospitals), os.cpu_count() or 1))
    # Ray starts here, not in Flower (which uses a running Ray as it is): each actor, a hospital's
    # ClientApp, skips MONAI's unused optional imports before it unpickles the apps. A Ray the
    # caller already runs is used as it is, as Flower would.
    if not ray.is_initialized():
        ray.init(num_cpus=workers, include_dashboard=False,
                 runtime_env={"worker_process_setup_hook": SKIP_UNUSED})
    try:
        run_simulation(server_app=server_app_for(lambda _: cfg),
                       client_app=client_app or client_app_for(lambda _: cfg),
                       num_supernodes=len(cfg.hospitals),
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    finally:
        ray.shutdown()  # Flower shuts it down after the rounds, not after an error


def federate(cfg: FedConfig, deployment: bool = False, client_app=None) -> dict:
    """Run the federation (simulation, or ``deployment`` on local Flower processes); report.
    ``client_app``: a replacement hospital app for the simulation."""
    cfg = cfg.check().resolved()
    out = Path(cfg.out)
    for i, hospital in enumerate(cfg.hospitals):  # an earlier run's personalised adapters
        shutil.rmtree(out / HOSPITALS / hospital_name(hospital, i), ignore_errors=True)
    manifests = write_hospital_manifests(cfg)
    write_yaml(out / "federation.yaml", cfg.to_dict())
    (out / "server.json").unlink(missing_ok=True)
    if deployment:
        from medpeft.federated.deployment import deploy
        deploy(cfg, out / "federation.yaml")
    else:
        simulate(cfg, client_app)
    server_path = out / "server.json"
    if not server_path.is_file():
        raise RuntimeError(f"{server_path}: the server app wrote no result; see Flower's lines "
                           "in log.txt there (--verbose shows them)")
    server = json.loads(server_path.read_text())
    flow = flow_for(cfg)
    report = {**server, "out": str(out),
              "local_only": flow.local_only(cfg, manifests) if cfg.baseline else {},
              "pooled": flow.pooled_bound(cfg, manifests) if cfg.pooled else {}}
    write_json(out / "report.json", report)
    write_text(out / "report.md", report_markdown(cfg, report))
    return report


def _dice_rows(report: dict, last: str) -> list[str]:
    """Per-hospital Dice; the local-only and pooled columns only where those arms ran."""
    dice, alone, pooled = report["dice"], report.get("local_only"), report.get("pooled")
    head = ["hospital", "Dice before", "Dice federated"]
    head += ["Dice local-only", "collaborative gain"] if alone else []
    head += ["Dice pooled", "gap to pooled"] if pooled else []
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for hospital in sorted(dice.get("0", {})):
        fed = dice.get(last, {}).get(hospital, float("nan"))
        cells = [hospital, f"{dice['0'][hospital]:.3f}", f"{fed:.3f}"]
        for arm in (alone, pooled):
            if arm:
                value = arm.get(hospital, float("nan"))
                cells += [f"{value:.3f}", f"{fed - value:+.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report_markdown(cfg: FedConfig, report: dict) -> str:
    """Per-hospital Dice (before, federated, local-only, pooled), left-out replies and the bytes
    table."""
    lines = [f"# Federation: {cfg.plan}, {cfg.rounds} rounds x {cfg.local_steps} local steps, "
             f"{len(cfg.hospitals)} hospitals, aggregation {cfg.aggregation}", ""]
    lines += _dice_rows(report, str(cfg.rounds))
    totals = report["bytes_total"]
    lines += ["", f"Bytes on the wire: {human(totals['bytes'])} in {totals['messages']} messages; "
              f"full fine-tuning of the same backbone: {human(totals['full_ft_bytes'])} "
              f"(**{totals['ratio']:.0f}x** more).", "",
              "| round | hospital | down | up | full FT (down + up) |", "|---:|---|---:|---:|---:|"]
    lines += [f"| {r['round']} | {r['site']} | {human(r['down'])} | {human(r['up'])} | "
              f"{human(r['full_ft'])} |" for r in report["bytes_per_round"]]
    if report.get("train"):
        lines += ["", "Hospitals whose update each round averaged (a hospital that failed, sent a bad reply "
                  "or dropped out is left out of that round only):", "",
                  "| round | contributed | left out |", "|---:|---|---|"]
        for rnd in sorted(report["train"], key=int):
            out_of = sorted({e["site"] for e in report["excluded"]
                             if str(e["round"]) == rnd and e["phase"] == "train"})
            lines.append(f"| {rnd} | {', '.join(sorted(report['train'][rnd]))} | "
                         f"{', '.join(out_of) or '-'} |")
    if "dp" in report:
        dp = report["dp"]
        lines += ["", f"Differential privacy: updates clipped to L2 norm {dp['clipping_norm']} at "
                  f"each hospital, Gaussian noise multiplier {dp['noise_multiplier']} on every "
                  f"aggregate: **epsilon = {dp['epsilon']:.2f}** at delta = {dp['delta']:g} "
                  f"over {cfg.rounds} rounds ({dp['accountant']})."]
    if cfg.local:
        lines += ["", f"Kept at each hospital (never sent): tensors matching {cfg.local}; each hospital's "
                  f"personalised adapter is in {Path(cfg.out) / HOSPITALS}/<hospital>/."]
    if "sea" in report:
        lines += sea_markdown(report["sea"])
    if report["excluded"]:
        lines += ["", "Left out of aggregation:", ""]
        lines += [f"- round {e['round']} ({e['phase']}): **{e['site']}**: {e['reason']}"
                  for e in report["excluded"]]
    return "\n".join(lines) + "\n"


def sea_markdown(sea: dict) -> list[str]:
    """The global active set after each round of federated SEA-PEFT."""
    lines = ["", f"SEA-PEFT: {sea['candidates']} candidates, budget {sea['budget']:,} parameters "
             f"(head {sea['head_parameters']:,}); active set after each round:", "",
             "| round | active | by kind | parameters used | calibration |",
             "|---:|---:|---|---:|---:|"]
    for r in sea["rounds"]:
        kinds = Counter(name.split(":", 1)[1] for name in r["active"])
        lines.append(f"| {r['round']} | {len(r['active'])} | "
                     f"{', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))} | "
                     f"{r['used']:,} / {r['budget']:,} | {r['calibration']:.2f} |")
    changes = [t for t in sea["transitions"] if not t["reason"].endswith("initial")]
    lines += ["", f"{len(changes)} changes after the first allocation."]
    return lines
