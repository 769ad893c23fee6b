"""The Dice cost of hospital-level differential privacy on the phantom's three hospitals.

`lora-everywhere` with FFA aggregation, or another fixed plan (``--plan``; FFA for LoRA plans,
FedAvg for the others: a weighted mean either way, so the Gaussian mechanism's sensitivity
holds), the same hospitals, rounds and local steps as configs/federated-phantom.yaml, at
epsilon = infinity (no DP), infinity with clipping only, 8 and 1 (delta 1e-5; the noise
multiplier for each epsilon is found with Flower's RDP accountant). Runs are cached in --out.

Usage: python benchmarks/federated_dp.py [--plan affine] [--rounds 3] [--local-steps 10] [--clip 0.1]
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

from medpeft.federated.config import load_fed_config
from medpeft.federated.plans import LORA_PLANS
from medpeft.federated.privacy import noise_for_epsilon
from medpeft.federated.run import federate
from medpeft.io import write_text


def run(cfg, out: Path) -> dict:
    if (out / "report.json").exists():
        return json.loads((out / "report.json").read_text())
    return federate(replace(cfg, out=str(out)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/federated-phantom.yaml")
    ap.add_argument("--plan", default="lora-everywhere",
                    help="a LoRA plan runs FFA; any other fixed plan FedAvg")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--local-steps", type=int, default=10)
    ap.add_argument("--clip", type=float, default=0.1, help="clipping norm of every update")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-federated-dp"))
    args = ap.parse_args()
    mode = "ffa" if args.plan in LORA_PLANS else "fedavg"
    base = replace(load_fed_config(args.config), plan=args.plan, aggregation=mode,
                   rounds=args.rounds, local_steps=args.local_steps, baseline=False,
                   pooled=False, server_lr=1.0)  # the DP table's arms: plain FedAvg
    n_hospitals = len(base.hospitals)
    arms = [("infinity (no DP)", {}), ("infinity, clipping only", None)]
    arms += [(f"{eps:g}", {"clipping_norm": args.clip,
                           "noise_multiplier": noise_for_epsilon(eps, args.rounds, n_hospitals)})
             for eps in (8.0, 1.0)]
    lines = [f"# Dice vs epsilon: {args.plan}, {mode}, {n_hospitals} hospitals, {args.rounds} rounds x "
             f"{args.local_steps} local steps, clipping norm {args.clip}, delta 1e-5, "
             f"{torch.get_num_threads()} threads", "",
             "| epsilon | noise multiplier | Dice before | Dice federated | accounted epsilon |",
             "|---|---:|---:|---:|---:|"]
    for name, dp in arms:
        if dp is None:  # clipping with a negligible noise: what the clip alone costs
            dp = {"clipping_norm": args.clip, "noise_multiplier": 1e-6}
        slug = name.split(" ")[0] + ("-clip" if "clipping" in name else "")
        r = run(replace(base, dp=dp), args.out / f"eps-{slug}")
        mean = lambda d: statistics.mean(d.values())  # noqa: E731
        eps = r.get("dp", {}).get("epsilon")
        lines.append(f"| {name} | {dp.get('noise_multiplier', 0):.3g} | "
                     f"{mean(r['dice']['0']):.3f} | {mean(r['dice'][str(args.rounds)]):.3f} | "
                     f"{'-' if eps is None else f'{eps:.2f}'} |")
        print(lines[-1], flush=True)
    write_text(args.out / "federated-dp.md", "\n".join(lines) + "\n")
    print("command: python benchmarks/federated_dp.py " + shlex.join(sys.argv[1:]))


if __name__ == "__main__":
    main()
