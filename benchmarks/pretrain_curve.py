"""Plot a foundation's pre-training curve: the training loss and, where measured, the mean and the
weakest organ's Dice at the held-out source site at milestone steps.

Usage: python benchmarks/pretrain_curve.py FOUNDATION_DIR [--milestones milestones.json]
  milestones.json: {"800": {"holdout": {"dice": .., "organs": {..}}, "zeroshot": {..}}, ...}
Writes FOUNDATION_DIR/pretrain_curve.png.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from medpeft.io import atomic_path  # noqa: E402


def plot(folder: Path, milestones: dict) -> Path:
    by_step = {}  # a resumed run logs the steps after its last checkpoint twice: keep the last
    for line in (folder / "pretrain_metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_step[row["step"]] = row
    rows = [by_step[s] for s in sorted(by_step)]
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    loss_ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], color="0.6", lw=0.8,
                 label="training loss (mean of 10 steps)")
    for before, row in zip(rows, rows[1:]):  # a continued stage logs its phase: mark where it starts
        if row.get("phase") != before.get("phase"):
            loss_ax.axvline(before["step"], color="0.3", ls=":", lw=0.8)
            loss_ax.text(before["step"], loss_ax.get_ylim()[1], f" {row.get('phase', '')}",
                         va="top", fontsize=6, rotation=90)
    loss_ax.set_xlabel("pre-training step")
    loss_ax.set_ylabel("Dice + CE loss")
    if milestones:
        dice_ax = loss_ax.twinx()
        steps = sorted(milestones, key=int)
        for site, style in (("holdout", "-o"), ("zeroshot", "--s")):
            if all(site in milestones[s] for s in steps):
                what = "source holdout" if site == "holdout" else "new site zero-shot"
                dice_ax.plot([int(s) for s in steps], [milestones[s][site]["dice"] for s in steps],
                             style, color="C0", label=f"{what}: mean Dice")
                dice_ax.plot([int(s) for s in steps],
                             [min(milestones[s][site]["organs"].values()) for s in steps],
                             style, color="C3", label=f"{what}: weakest organ")
        dice_ax.set_ylim(0, 1)
        dice_ax.set_ylabel("Dice")
        dice_ax.legend(loc="upper left", bbox_to_anchor=(0.12, 1.0), fontsize=7)  # clear of the milestones
    loss_ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    out = folder / "pretrain_curve.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("foundation", type=Path)
    ap.add_argument("--milestones", type=Path, default=None)
    args = ap.parse_args()
    milestones = json.loads(args.milestones.read_text()) if args.milestones else {}
    print(plot(args.foundation, milestones))


if __name__ == "__main__":
    main()
