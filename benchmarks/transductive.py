"""Transductive adaptation with a size prior, against the plain probe, on the phantom's new site.

Binary organ task (spleen unless --organ), K support volumes chosen by the seed, a black-box head
(linear unless --kind) trained for --steps on the frozen foundation's features. The transductive
arm also adapts on the site's unlabelled scans (the split's test volumes, as a site would use the
scans it wants segmented) with the size prior from the support masks (medpeft.infer.transductive).
Both arms get the same support volumes, seed, steps and test volumes. Reported per seed: the prior,
each arm's Dice and the median volume it predicts on the unlabelled scans. Cells are cached in
--out, so an interrupted run resumes.

Usage: python benchmarks/transductive.py [--seeds 0 1 2] [--shots 5] [--organ spleen]
         [--kind linear] [--steps 100] [--dataset runs/cache/phantom-demo-s0/Task10_NewSite]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from medpeft.data.fewshot import make_split, write_manifest
from medpeft.data.msd import load_msd
from medpeft.data.ontology import class_mapping
from medpeft.evaluate.metrics import evaluate_cases, mean_dice
from medpeft.experiments.cell import cached
from medpeft.io import write_text
from medpeft.methods.blackbox.predictor import load_blackbox, volume_features
from medpeft.methods.blackbox.service import foundation_service
from medpeft.models.weights import load_foundation, shipped_foundation
from medpeft.pipelines.blackbox import blackbox_adapt

ARMS = ("plain", "transductive")


def run_seed(args, seed: int, target, foundation_dir: Path, f, service) -> dict:
    """Both arms for one seed: {seed, arm: {dice, median_ml, prior_ml}} (the prior: transductive only)."""
    split = make_split(target, args.shots, seed, args.n_test)
    cell = args.out / f"k{args.shots}-s{seed}"
    manifest = write_manifest(cell / "manifest.json", split)
    unlabelled = [target.case(n).image for n in split["test"]]
    features: list[torch.Tensor] = []  # computed once, and only when a cell is not cached yet
    voxel_ml = float(np.prod(f.preprocessing.spacing)) / 1000
    record: dict = {"seed": seed}
    for arm in ARMS:
        def compute(arm=arm) -> dict:
            summary = blackbox_adapt(foundation_dir, manifest, cell / arm, kind=args.kind,
                                     organs=(args.organ,), steps=args.steps, seed=seed,
                                     service=service,
                                     unlabelled=unlabelled if arm == "transductive" else ())
            predictor, _ = load_blackbox(cell / arm, service)
            if not features:
                features.extend(volume_features(service, p, f.preprocessing).float() for p in unlabelled)
            with torch.no_grad():
                volumes = [float((predictor.head(x).argmax(1) == 1).sum()) * voxel_ml for x in features]
            rows = evaluate_cases(predictor, target, split["test"],
                                  class_mapping(target.labels, (args.organ,)), pp=f.preprocessing,
                                  classes=(args.organ,))
            prior = summary.get("transductive", {}).get("prior_ml", {}).get(args.organ)
            return {"dice": mean_dice(rows), "median_ml": float(np.median(volumes)), "prior_ml": prior}
        record[arm] = cached(cell / f"{arm}.json", compute)
    return record


def markdown(records: list[dict], args) -> str:
    lines = [f"# Transductive size prior vs plain probe: {args.organ}, K={args.shots}, "
             f"{args.kind} head, {args.steps} steps", "",
             f"- command: `python benchmarks/transductive.py {' '.join(args.argv)}`",
             f"- machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
             f"- foundation: {args.foundation or 'the shipped one'}; dataset: {args.dataset}, "
             f"{args.n_test} test volumes (also the unlabelled scans)", "",
             "| seed | prior mL | plain: Dice | plain: median mL | transductive: Dice | "
             "transductive: median mL | gain |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        p, t = r["plain"], r["transductive"]
        lines.append(f"| {r['seed']} | {t['prior_ml']:.0f} | {p['dice']:.3f} | {p['median_ml']:.0f} | "
                     f"{t['dice']:.3f} | {t['median_ml']:.0f} | {t['dice'] - p['dice']:+.3f} |")
    gains = [r["transductive"]["dice"] - r["plain"]["dice"] for r in records]
    mean = {arm: statistics.mean(r[arm]["dice"] for r in records) for arm in ARMS}
    lines.append(f"| mean | | {mean['plain']:.3f} | | {mean['transductive']:.3f} | | "
                 f"{statistics.mean(gains):+.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--foundation", type=Path, default=None, help="default: the shipped one")
    ap.add_argument("--dataset", type=Path, default=Path("runs/cache/phantom-demo-s0/Task10_NewSite"))
    ap.add_argument("--organ", default="spleen")
    ap.add_argument("--kind", default="linear", choices=["linear", "spatial"])
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--n-test", type=int, default=6)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-transductive"))
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    if not (args.dataset / "dataset.json").is_file():
        sys.exit(f"{args.dataset}: no dataset.json (run `make demo` or `medpeft phantom` first)")
    foundation_dir = args.foundation or shipped_foundation()
    f = load_foundation(foundation_dir)
    service = foundation_service(f.model)
    target = load_msd(args.dataset)
    records = [run_seed(args, seed, target, foundation_dir, f, service) for seed in args.seeds]
    text = markdown(records, args)
    write_text(args.out / "transductive.md", text)
    Console().print(text, soft_wrap=True)


if __name__ == "__main__":
    main()
